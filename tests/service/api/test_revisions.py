"""POST /v1/jobs/{id}/revisions: a correction re-propagated from the nearest stored record,
through the gateway, Redis and a worker process (tiny model)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from service.media.masks import encode_indexed_png, read_indexed_png
from tests.conftest import REPO, TINY_CHECKPOINT
from tests.helpers.stack import submit, wait_for

pytestmark = pytest.mark.timeout(240)
FRAMES = 72
GT = REPO / "examples" / "shapes_gt"


def _frames(http, job_id: str) -> dict[int, bytes]:
    return {i: http.get(f"/v1/jobs/{job_id}/frames/{i}.png").content for i in range(FRAMES)}


def _labels(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


def _segment_with(masks_dir, out) -> None:
    """`isvos segment` given masks on several frames (a folder of indexed PNGs)."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(REPO / "examples" / "shapes.mp4"),
         "--masks", str(masks_dir), "--out", str(out), "--size", "96", "--config", "tiny",
         "--checkpoint", str(TINY_CHECKPOINT), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _revise(http, job_id: str, frame: int, labels: np.ndarray | None = None, remove=()):
    files = None
    if labels is not None:
        files = {"masks": ("fix.png", encode_indexed_png(labels), "image/png")}
    data = {"frame": str(frame), "remove": json.dumps(list(remove))}
    return http.post(f"/v1/jobs/{job_id}/revisions", data=data, files=files)


@pytest.fixture(scope="module")
def finished(service, example_clip):
    with service.client() as http:
        video, masks = example_clip
        job = submit(http, video, [masks], {"size": 96}).json()
        done = wait_for(http, job["id"])
        assert done["status"] == "succeeded", done
        yield done, _frames(http, job["id"])


def test_a_revision_equals_a_fresh_job_with_the_correction_and_keeps_earlier_frames(
    http, finished, tmp_path
):
    job, before = finished
    k = 30
    correction = read_indexed_png(GT / f"{k:05d}.png")
    created = _revise(http, job["id"], k, correction)
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "queued" and created.json()["revision"] == 1
    done = wait_for(http, job["id"])
    assert done["status"] == "succeeded", done
    revision = done["revisions"][0]
    assert revision["frame"] == k and revision["objects"] == [1, 2]
    assert revision["record_frame"] is not None and 0 < revision["record_frame"] <= k
    # Only the frames from k on were computed again.
    assert done["steps"] - revision["steps_before"] == FRAMES - k
    assert done["frames_done"] == FRAMES and "png_zip" in done["outputs"]
    after = _frames(http, job["id"])
    assert all(after[i] == before[i] for i in range(k))
    assert any(after[i] != before[i] for i in range(k, FRAMES))
    # A fresh run given the first-frame masks plus the correction on frame k.
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(REPO / "examples" / "shapes_first_frame.png", masks / "00000.png")
    (masks / f"{k:05d}.png").write_bytes(encode_indexed_png(correction))
    _segment_with(masks, tmp_path / "fresh")
    for i in range(k, FRAMES):
        expected = read_indexed_png(tmp_path / "fresh" / "masks" / f"{i:05d}.png")
        np.testing.assert_array_equal(_labels(after[i]), expected, err_msg=f"frame {i}")

    # A second revision removes object 2 from a later frame on.
    second = _revise(http, job["id"], 50, remove=[2])
    assert second.status_code == 202, second.text
    done = wait_for(http, job["id"])
    assert done["status"] == "succeeded" and done["revision"] == 2
    assert done["steps"] - done["revisions"][1]["steps_before"] == FRAMES - 50
    last = _frames(http, job["id"])
    assert all(last[i] == after[i] for i in range(50))
    assert all(2 not in _labels(last[i]) for i in range(50, FRAMES))


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"frame": "72", "remove": "[1]"}, 422, "frame_range"),
        ({"frame": "5"}, 400, "invalid_argument"),
        ({"frame": "5", "remove": "[9]"}, 400, "invalid_objects"),
        ({"frame": "5", "remove": "one"}, 400, "invalid_argument"),
        ({"frame": "-1", "remove": "[1]"}, 400, "invalid_argument"),
    ],
)
def test_bad_revisions_say_what_is_wrong(http, finished, data, status, code):
    job, _ = finished
    wait_for(http, job["id"])
    response = http.post(f"/v1/jobs/{job['id']}/revisions", data=data)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_a_mask_of_another_size_and_a_running_job_are_refused(http, example_clip):
    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 96}).json()
    wrong = _revise(http, job["id"], 3, np.ones((10, 10), np.uint8))
    assert wrong.status_code == 422 and wrong.json()["code"] == "mask_size_mismatch"
    early = _revise(http, job["id"], 3, remove=[1])
    if early.status_code != 202:  # the job had not finished yet
        assert early.status_code == 409 and early.json()["code"] == "failed_precondition"
    wait_for(http, job["id"])
