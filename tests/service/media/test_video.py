"""Video probing/decoding: formats, rotation, ranges, limits, corrupt input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.video import (
    BackgroundDecoder,
    apply_rotation,
    count_frames,
    iter_frames,
    normalize_rotation,
    probe_video,
)
from tests.service.media._videos import frame_value, pattern, write_video

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def basic(videos: Path) -> Path:
    return write_video(videos / "basic.mp4")


def _grey(image: np.ndarray) -> float:
    h, w = image.shape[:2]
    return float(image[h // 2 :, w // 2 :].mean())


def test_probe_basic(basic: Path) -> None:
    info = probe_video(basic)
    assert (info.width, info.height, info.coded_width, info.coded_height) == (64, 48, 64, 48)
    assert info.rotation == 0 and info.frame_count == 10 and info.fps == 10.0
    assert info.codec == "h264" and info.pixel_format == "yuv420p"
    assert not info.has_audio and not info.is_frame_folder
    assert info.duration_s == pytest.approx(1.0)


def test_iter_frames_order_and_content(basic: Path) -> None:
    frames = list(iter_frames(basic))
    assert [f.index for f in frames] == list(range(10))
    for f in frames:
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert abs(_grey(f.image) - frame_value(f.index)) < 4
    assert frames[3].pts_s == pytest.approx(0.3)


def test_start_end_stride(basic: Path) -> None:
    assert [f.index for f in iter_frames(basic, start=2, end=9, stride=3)] == [2, 5, 8]
    assert [f.index for f in iter_frames(basic, start=8, end=50)] == [8, 9]  # end is clipped


@pytest.mark.parametrize("kwargs", [{"start": 10}, {"start": 99}, {"start": -1}, {"stride": 0}])
def test_frame_range_errors(basic: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(MediaError) as e:
        list(iter_frames(basic, **kwargs))
    assert e.value.code == "frame_range"


def test_frame_range_without_header_count(videos: Path) -> None:
    mkv = write_video(videos / "nocount.mkv")
    with pytest.raises(MediaError, match="10 frames") as e:
        list(iter_frames(mkv, start=10))
    assert e.value.code == "frame_range"


def test_truncated_and_garbage_files(videos: Path, basic: Path) -> None:
    data = basic.read_bytes()
    half = videos / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    garbage = videos / "garbage.mp4"
    garbage.write_bytes(b"definitely not a video" * 20)
    empty = videos / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (half, garbage, empty, videos / "missing.mp4"):
        with pytest.raises(MediaError) as e:
            probe_video(bad)
            list(iter_frames(bad))
        assert e.value.code == "video_unreadable"
        assert bad.name in str(e.value)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_cut_in_half_fails_while_decoding(videos: Path, suffix: str) -> None:
    path = write_video(videos / f"noisy{suffix}", frames=20, noise=True)
    cut = videos / f"noisy_cut{suffix}"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    info = probe_video(cut)  # the header and first frame are intact
    assert info.width == 64
    with pytest.raises(MediaError, match="truncated") as e:
        list(iter_frames(cut))
    assert e.value.code == "video_unreadable"
    # MP4 declares a frame count; Matroska only a duration.
    assert ("declares 20 frames" if suffix == ".mp4" else "header says 2.0 s") in str(e.value)


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (MediaLimits(max_width=32), "dimensions_too_large"),
        (MediaLimits(max_pixels=1000), "dimensions_too_large"),
        (MediaLimits(max_frames=5), "too_many_frames"),
        (MediaLimits(max_duration_s=0.5), "too_long"),
        (MediaLimits(max_file_bytes=100), "video_too_large"),
    ],
)
def test_limits_checked_before_decoding(basic: Path, limits: MediaLimits, code: str) -> None:
    for call in (lambda: probe_video(basic, limits), lambda: list(iter_frames(basic, limits))):
        with pytest.raises(MediaError) as e:
            call()
        assert e.value.code == code and "limit" in str(e.value)


def test_max_frames_enforced_without_header_count(videos: Path) -> None:
    mkv = write_video(videos / "long.mkv", frames=40, fps=40)
    limits = MediaLimits(max_frames=39)
    probe_video(mkv, limits)  # Matroska has no frame count; the estimate is within 5 %
    with pytest.raises(MediaError) as e:
        list(iter_frames(mkv, limits))
    assert e.value.code == "too_many_frames" and "40 frames" in str(e.value)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video(videos: Path, rotation: int) -> None:
    path = write_video(videos / f"rot{rotation}.mp4", frames=3, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation % 360
    assert (info.coded_width, info.coded_height) == (64, 48)
    swapped = rotation % 180 != 0
    assert (info.width, info.height) == ((48, 64) if swapped else (64, 48))
    frame = next(iter(iter_frames(path)))
    assert frame.image.shape == (info.height, info.width, 3)
    expected = np.rot90(pattern(64, 48, 0), k=(rotation % 360) // 90)
    assert np.abs(frame.image.astype(int) - expected).mean() < 6
    # Cross-check against OpenCV's own autorotation (FFmpeg backend).
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    if ok and bgr.shape[:2] == frame.image.shape[:2]:
        assert np.abs(bgr[..., ::-1].astype(int) - frame.image).mean() < 3


def test_rotation_helpers() -> None:
    assert [normalize_rotation(d) for d in (-90, -180, 270, 89.6, 360, 0)] == [
        270,
        180,
        270,
        90,
        0,
        0,
    ]
    img = np.arange(6).reshape(2, 3)
    assert apply_rotation(img, 90).tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
    assert apply_rotation(img, 0) is img


def test_odd_size_yuv444(videos: Path) -> None:
    path = write_video(videos / "odd.mp4", 65, 49, frames=4, pix_fmt="yuv444p")
    info = probe_video(path)
    assert (info.width, info.height, info.pixel_format) == (65, 49, "yuv444p")
    frames = list(iter_frames(path))
    assert len(frames) == 4 and frames[0].image.shape == (49, 65, 3)


def test_ten_bit_video(videos: Path) -> None:
    path = write_video(videos / "10bit.mp4", 66, 50, frames=4, pix_fmt="yuv420p10le")
    info = probe_video(path)
    assert info.pixel_format == "yuv420p10le" and info.codec == "h264"
    frames = list(iter_frames(path))
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (50, 66, 3)
    assert all(abs(_grey(f.image) - frame_value(f.index)) < 5 for f in frames)


def test_video_with_audio(videos: Path) -> None:
    path = write_video(videos / "audio.mp4", frames=6, audio=True)
    assert probe_video(path).has_audio
    assert [f.index for f in iter_frames(path)] == list(range(6))


def test_count_frames(videos: Path, basic: Path) -> None:
    assert count_frames(basic) == 10
    mkv = write_video(videos / "count.mkv", frames=7)
    assert count_frames(mkv) == 7
    assert len(list(iter_frames(mkv))) == 7  # an intact Matroska file is not "truncated"


def _write_folder(folder: Path, n: int, ext: str = ".jpg") -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(pattern(32, 24, i)).save(folder / f"{i}{ext}", quality=95)
    return folder


def test_frame_folder(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "JPEGImages", 12)  # 0..11: natural sort, not 0,1,10,11,2
    (folder / "notes.txt").write_text("ignored")
    info = probe_video(folder)
    assert info.is_frame_folder and info.frame_count == 12 and (info.width, info.height) == (32, 24)
    frames = list(iter_frames(folder, start=1, stride=5))
    assert [f.index for f in frames] == [1, 6, 11]
    assert all(abs(_grey(f.image) - frame_value(f.index)) < 4 for f in frames)
    assert count_frames(folder) == 12


def test_frame_folder_errors(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "mixed", 3, ".png")
    Image.fromarray(pattern(30, 24, 0)).save(folder / "3.png")
    with pytest.raises(MediaError, match="same size") as e:
        probe_video(folder)
    assert e.value.code == "video_unreadable"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no .jpg"):
        probe_video(tmp_path / "empty")
    with pytest.raises(MediaError) as e:
        list(iter_frames(_write_folder(tmp_path / "ok", 3), start=3))
    assert e.value.code == "frame_range"


def test_background_decoder(basic: Path) -> None:
    with BackgroundDecoder(basic, stride=2) as dec:
        assert [f.index for f in dec] == [0, 2, 4, 6, 8]
    assert not dec.alive


def test_background_decoder_propagates_errors(videos: Path, basic: Path) -> None:
    bad = videos / "bg_garbage.mp4"
    bad.write_bytes(b"\x00" * 1000)
    dec = BackgroundDecoder(bad)
    with pytest.raises(MediaError) as e:
        next(iter(dec))
    assert e.value.code == "video_unreadable"
    dec.close()
    assert not dec.alive
    with pytest.raises(MediaError):  # range errors surface immediately
        BackgroundDecoder(basic, start=5, end=2)


def test_background_decoder_close_early(basic: Path) -> None:
    dec = BackgroundDecoder(basic, queue_size=1)
    assert next(dec).index == 0
    dec.close()
    assert not dec.alive
    assert list(dec) == []


def test_media_error_and_limits() -> None:
    err = MediaError("mask_empty", "mask 'a.png' has no pixels")
    assert isinstance(err, ValueError) and err.code == "mask_empty"
    assert err.to_dict() == {"code": "mask_empty", "message": "mask 'a.png' has no pixels"}
    limits = MediaLimits()
    assert limits.max_file_bytes == 2 * 1024**3 and limits.max_objects == 255
    with pytest.raises(AttributeError):
        limits.max_frames = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        MediaLimits(max_objects=300)
