"""Overlay video (H.264, playable) and PNG contact sheets."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from service.media.masks import PALETTE_RGB
from service.media.overlay import OverlayWriter, contact_sheet, render_overlay, write_preview
from service.media.video import iter_frames, probe_video

pytestmark = pytest.mark.timeout(60)


def _sample(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((h, w, 3), 100, np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[10:30, 10:30] = 1
    labels[15:35, 35:55] = 2
    return image, labels


def test_render_overlay_tint_and_outline() -> None:
    image, labels = _sample(48, 64)
    out = render_overlay(image, labels)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (100, 100, 100)  # background untouched
    assert tuple(out[20, 20]) == (114, 50, 50)  # 0.5 * grey + 0.5 * (128, 0, 0)
    assert tuple(out[10, 10]) == tuple(PALETTE_RGB[1])  # outline: solid colour
    assert tuple(out[11, 20]) == tuple(PALETTE_RGB[1])  # 2 px wide
    assert tuple(out[12, 20]) == (114, 50, 50)
    assert np.array_equal(render_overlay(image, np.zeros_like(labels)), image)


@pytest.mark.parametrize(("w", "h"), [(64, 48), (65, 49)])
def test_overlay_video_is_playable_h264(tmp_path: Path, w: int, h: int) -> None:
    image, labels = _sample(h, w)
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, w, h, fps=12.5) as writer:
        for i in range(7):
            writer.write_frame(np.roll(image, i, axis=1), labels)
    assert writer.frames_written == 7
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        assert float(vs.average_rate) == pytest.approx(12.5)
        frames = list(c.decode(vs))
    assert len(frames) == 7
    assert frames[0].format.name == "yuv420p"
    assert (frames[0].width, frames[0].height) == (w + w % 2, h + h % 2)  # odd sizes padded
    info = probe_video(path)
    assert info.frame_count == 7
    first = next(iter(iter_frames(path)))
    assert np.abs(first.image[20, 20].astype(int) - (114, 50, 50)).max() < 12


def test_overlay_writer_rejects_wrong_size(tmp_path: Path) -> None:
    image, labels = _sample(48, 64)
    with OverlayWriter(tmp_path / "o.mp4", 32, 24, fps=10) as writer:
        with pytest.raises(ValueError):
            writer.write_frame(image, labels)
    with pytest.raises(ValueError):
        OverlayWriter(tmp_path / "bad.mp4", 32, 24, fps=0)


def test_contact_sheet_and_preview(tmp_path: Path) -> None:
    items = [_sample(48, 64) for _ in range(5)]
    sheet = contact_sheet(items, columns=4, thumb_width=100)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (2 * 75 + 3 * 4, 4 * 100 + 5 * 4, 3)
    write_preview(tmp_path / "preview.png", items[:2], thumb_width=50)
    with Image.open(tmp_path / "preview.png") as im:
        assert im.format == "PNG" and im.size == (2 * 50 + 3 * 4, 38 + 2 * 4)
    with pytest.raises(ValueError):
        contact_sheet([])
