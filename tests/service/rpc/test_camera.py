"""`isvos stream`: a video file streamed to the server, masks written like `isvos segment`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_CHECKPOINT

pytestmark = pytest.mark.timeout(180)


def test_stream_a_file_and_write_masks(grpc_server, example_clip, tmp_path):
    video, masks = example_clip
    out = tmp_path / "stream"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "stream", str(video), "--masks", str(masks),
         "--server", grpc_server.target, "--out", str(out), "--size", "96", "--overlay"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "72 frames" in done.stdout and "dropped 0" in done.stdout
    reference = tmp_path / "segment"
    subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(masks),
         "--out", str(reference), "--size", "96", "--config", "tiny", "--checkpoint",
         str(TINY_CHECKPOINT), "--threads", "1"],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    written = sorted((out / "masks").glob("*.png"))
    assert len(written) == 72 and (out / "masks.json").exists() and (out / "overlay.mp4").exists()
    for path in written:
        expected = np.array(Image.open(reference / "masks" / path.name))
        np.testing.assert_array_equal(np.array(Image.open(path)), expected)


def test_a_bad_source_is_a_clear_error(grpc_server, example_clip, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "stream", str(tmp_path / "nope.mp4"), "--masks",
         str(example_clip[1]), "--server", grpc_server.target],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
