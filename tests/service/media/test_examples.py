"""The committed example clip is small, consistent and loadable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.media.masks import load_mask_input, read_indexed_png
from service.media.video import probe_video

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_files() -> None:
    video = EXAMPLES / "shapes.mp4"
    gt = sorted((EXAMPLES / "shapes_gt").glob("*.png"))
    files = [video, EXAMPLES / "shapes_first_frame.png", *gt]
    assert sum(p.stat().st_size for p in files) < 1.5 * 1024 * 1024
    info = probe_video(video)
    assert (info.width, info.height, info.fps, info.codec) == (320, 240, 24.0, "h264")
    assert info.frame_count == len(gt) == 72
    first = load_mask_input(EXAMPLES / "shapes_first_frame.png", (info.height, info.width))
    assert set(np.unique(first[0])) == {0, 1, 2}
    assert np.array_equal(first[0], read_indexed_png(gt[0]))
