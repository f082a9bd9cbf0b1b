"""The web page in headless Chromium: upload the example clip, click-select an object, paint a
second one, run, watch frames arrive, scrub, download, correct a later frame and
re-propagate; every request stays on the page's origin. Screenshots go to the artifacts."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from service.media.masks import read_indexed_png, write_indexed_png
from tests.conftest import REPO, iou
from tests.helpers.stack import submit, wait_for
from tests.service.web.conftest import TOKEN

pytestmark = pytest.mark.timeout(420)
VIDEO = REPO / "examples" / "shapes.mp4"
GT = REPO / "examples" / "shapes_gt"
FRAMES = 72
READ_LABELS = """async () => {
  const { PALETTE } = await import('/static/masks.js');
  const ids = new Map(PALETTE.map(([r, g, b], i) => [(r << 16) | (g << 8) | b, i]));
  const canvas = document.getElementById('mask-canvas');
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let text = '';
  for (let p = 0; p < d.length; p += 4) {
    const id = d[p + 3] ? (ids.get((d[p] << 16) | (d[p + 1] << 8) | d[p + 2]) || 0) : 0;
    text += String.fromCharCode(id);
  }
  return { width: canvas.width, height: canvas.height, data: btoa(text) };
}"""


HAS_MASK = """() => {
  const canvas = document.getElementById('mask-canvas');
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let p = 3; p < d.length; p += 4) if (d[p]) return true;
  return false;
}"""


def shown_labels(page) -> np.ndarray:
    """The label map the page draws (opacity 100%, so the colours are exact)."""
    out = page.evaluate(READ_LABELS)
    flat = np.frombuffer(base64.b64decode(out["data"]), np.uint8)
    return flat.reshape(out["height"], out["width"])


def inner_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside ``mask`` (x, y)."""
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(depth.argmax(), depth.shape)
    return int(x), int(y)


def click_at(page, x: int, y: int, size: tuple[int, int]) -> None:
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / size[1],
                     box["y"] + (y + 0.5) * box["height"] / size[0])  # fmt: skip


def wait_until(page, condition: str, arg=None, timeout_s: float = 120) -> None:
    """Wait for ``condition`` (JS) in the page; on a timeout, say what the page showed."""
    try:
        page.wait_for_function(condition, arg=arg, timeout=timeout_s * 1000)
    except Exception as exc:
        said = page.evaluate("() => [document.querySelector('#message').textContent, "
                             "document.querySelector('#job-text').textContent]")  # fmt: skip
        raise AssertionError(f"{condition} {arg}: the page says {said}") from exc


def wait_text(page, selector: str, text: str, timeout_s: float = 120) -> None:
    wait_until(page, "([s, t]) => document.querySelector(s).textContent.includes(t)",
               [selector, text], timeout_s)  # fmt: skip


def api(service) -> httpx.Client:
    return service.client(TOKEN)


def frame_pngs(client, job_id: str) -> dict[int, bytes]:
    return {i: client.get(f"/v1/jobs/{job_id}/frames/{i}.png").content for i in range(FRAMES)}


def test_the_page_from_upload_to_a_corrected_revision(page_service, browser, artifacts,
                                                      tmp_path):  # fmt: skip
    origin = page_service.url
    context = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    page = context.new_page()
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(origin + "/")

    # An API key is asked for; the page keeps it for this tab and sends it to its origin.
    page.locator("#api-key").fill(TOKEN)
    page.locator("#key-form button").click()
    page.locator("#video-file").set_input_files(str(VIDEO))
    wait_text(page, "#upload-text", "uploaded")
    wait_text(page, "#frame-label", "0 / 71")
    page.screenshot(path=artifacts / "1-uploaded.png")
    page.locator("#opacity").fill("100")

    # Click-select object 1 from the instance branch's proposals.
    truth = read_indexed_png(GT / "00000.png")
    size = truth.shape
    click_at(page, *inner_point(truth == 1), size)
    try:
        page.wait_for_function(HAS_MASK, timeout=60_000)
    except Exception as exc:
        said = page.locator("#message").text_content()
        raise AssertionError(f"no mask: {said} {errors} {console}") from exc
    selected = shown_labels(page) == 1
    scores = {o: iou(selected, truth == o) for o in (1, 2)}
    (artifacts / "click-select.json").write_text(json.dumps({"iou": scores}))
    assert scores[1] >= 0.8 and scores[2] == 0.0, scores

    # Paint object 2 with the brush.
    page.locator("#add-object").click()
    page.keyboard.press("b")
    page.locator("#brush-size").fill("40")
    x, y = inner_point(truth == 2)
    click_at(page, x, y, size)
    marked = shown_labels(page)
    assert (marked == 2).sum() > 500 and (marked == 1).any()
    page.screenshot(path=artifacts / "2-marked.png")

    # Run, and see frames arrive while it runs.
    page.locator("#run").click()
    wait_text(page, "#job-text", "frames")
    wait_until(page, "() => document.querySelector('#job-progress').value > 0")
    wait_text(page, "#job-text", "succeeded")
    page.screenshot(path=artifacts / "3-finished.png")

    # Scrub to a later frame: its masks are drawn.
    page.locator("#frame-slider").fill("40")
    wait_text(page, "#frame-label", "40 / 71")
    page.wait_for_timeout(300)
    assert (shown_labels(page) > 0).any()

    # The zip equals `isvos segment` given the same masks.
    with page.expect_download() as download:
        page.locator(".downloads button[data-format=png_zip]").click()
    zipped = tmp_path / "masks.zip"
    download.value.save_as(zipped)
    first = tmp_path / "marked.png"
    write_indexed_png(first, marked)
    reference = tmp_path / "reference"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(VIDEO), "--masks", str(first),
         "--out", str(reference), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(zipped) as archive:
        names = sorted(archive.namelist())
        assert len(names) == FRAMES
        for name in names:
            got = np.array(Image.open(io.BytesIO(archive.read(name))))
            expected = read_indexed_png(reference / "masks" / name.split("/")[-1])
            np.testing.assert_array_equal(got, expected, err_msg=name)

    # Correct frame 50 (paint more of object 2) and re-propagate.
    with api(page_service) as client:
        job = client.get("/v1/jobs").json()["jobs"][0]
        before = frame_pngs(client, job["id"])
    page.locator("#frame-slider").fill("50")
    wait_text(page, "#frame-label", "50 / 71")
    page.wait_for_timeout(300)
    page.keyboard.press("2")
    page.keyboard.press("b")
    later = read_indexed_png(GT / "00050.png")
    click_at(page, *inner_point(later == 1), size)  # object 2 painted over part of object 1
    page.locator("#repropagate").click()
    wait_text(page, "#revision-text", "revision 1")
    wait_text(page, "#job-text", "succeeded")
    page.locator("#opacity").fill("60")
    page.locator("#frame-slider").fill("50")
    wait_text(page, "#frame-label", "50 / 71")
    page.wait_for_timeout(300)
    page.screenshot(path=artifacts / "4-revised.png")
    with api(page_service) as client:
        revised = client.get(f"/v1/jobs/{job['id']}").json()
        after = frame_pngs(client, job["id"])
    revision = revised["revisions"][0]
    assert revision["frame"] == 50 and revision["objects"] == [2]
    assert revised["steps"] - revision["steps_before"] == FRAMES - 50  # only those recomputed
    assert all(after[i] == before[i] for i in range(50))
    assert after[50] != before[50]

    # Nothing left the page's origin; the key went only there.
    own = urlsplit(origin).netloc
    for url, authorization in requests:
        parts = urlsplit(url)
        assert parts.scheme in ("blob", "data") or parts.netloc == own, url
        assert authorization in (None, f"Bearer {TOKEN}")
    assert any(a for _, a in requests), "the key was never sent"
    assert not errors, errors
    context.close()


def test_the_page_says_what_is_wrong_and_reviews_on_a_phone(page_service, browser, artifacts):
    with api(page_service) as client:
        job = submit(client, VIDEO, [REPO / "examples" / "shapes_first_frame.png"]).json()
        wait_for(client, job["id"])
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(page_service.url + "/")
    page.locator("#show-jobs").click()  # no key yet: the API answers 401
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "unauthenticated" in message.text_content() or "401" in message.text_content()
    page.locator("#api-key").fill(TOKEN)
    page.locator("#key-form button").click()
    page.locator("#job-list button").first.click()
    wait_text(page, "#frame-label", "/ 71")
    page.keyboard.press("ArrowRight")
    wait_text(page, "#frame-label", "1 / 71")
    width = page.evaluate("() => document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page overflows a phone's width ({width} px)"
    assert page.locator("#stage").bounding_box()["width"] > 300
    page.screenshot(path=artifacts / "5-phone-review.png", full_page=True)
    context.close()
