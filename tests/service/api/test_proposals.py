"""POST /v1/proposals through the gateway, Redis and a worker process (tiny model)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.helpers.stack import submit, wait_for

pytestmark = pytest.mark.timeout(120)


def _first_frame(video) -> np.ndarray:
    with av.open(str(video)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _masks(body: dict) -> list[np.ndarray]:
    return [decode_rle(p["rle"]) for p in body["proposals"]]


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_proposals_of_an_image_are_ranked_and_disjoint(http, example_clip):
    image = _first_frame(example_clip[0])
    response = http.post("/v1/proposals", files={"image": ("f.png", _png(image))},
                         data={"size": "96"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["height"], body["width"]) == image.shape[:2]
    assert body["proposals"], "the tiny model proposes nothing on the example frame"
    scores = [p["score"] for p in body["proposals"]]
    assert scores == sorted(scores, reverse=True)
    masks = _masks(body)
    assert max(np.sum(masks, axis=0).ravel()) == 1  # no pixel in two proposals
    for proposal, mask in zip(body["proposals"], masks, strict=True):
        assert proposal["area"] == int(mask.sum()) > 0
        x, y, w, h = proposal["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                ys.max() - ys.min() + 1)  # fmt: skip


def test_a_jobs_frame_and_its_image_give_the_same_proposals_and_a_click_selects(http, example_clip):
    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 96}).json()
    image = _first_frame(video)
    by_image = http.post("/v1/proposals", files={"image": ("f.png", _png(image))},
                         data={"size": "96"}).json()  # fmt: skip
    first = _masks(by_image)[0]
    ys, xs = np.nonzero(first)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    by_frame = http.post("/v1/proposals", data={"job_id": job["id"], "frame": "0",
                                                "x": str(x), "y": str(y)})  # fmt: skip
    assert by_frame.status_code == 200, by_frame.text
    body = by_frame.json()
    assert body["job_id"] == job["id"] and body["frame"] == 0
    assert [p["rle"] for p in body["proposals"]] == [p["rle"] for p in by_image["proposals"]]
    assert body["selected"] == by_image["proposals"][0]["id"]
    wait_for(http, job["id"])


@pytest.mark.parametrize(
    ("data", "files", "status", "code"),
    [
        ({}, None, 400, "invalid_argument"),
        ({"x": "3"}, {"image": ("f.png", b"")}, 400, "invalid_argument"),
        ({}, {"image": ("f.png", b"not an image")}, 422, "image_unreadable"),
        ({"job_id": "0" * 32, "frame": "0"}, None, 404, "not_found"),
        ({"job_id": "../../etc", "frame": "0"}, None, 404, "not_found"),
        ({"size": "100000"}, {"image": ("f.png", b"x")}, 400, "invalid_size"),
    ],
)
def test_bad_proposal_requests_say_what_is_wrong(http, data, files, status, code):
    response = http.post("/v1/proposals", data=data, files=files)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_a_frame_past_the_end_is_refused(http, example_clip):
    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 96}).json()
    response = http.post("/v1/proposals", data={"job_id": job["id"], "frame": "72"})
    assert response.status_code == 422 and response.json()["code"] == "frame_range"
    wait_for(http, job["id"])
