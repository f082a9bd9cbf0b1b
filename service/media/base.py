"""Shared media types (VideoInfo, Frame), rotation helpers and limit checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MediaError
from .limits import MediaLimits


@dataclass(frozen=True)
class VideoInfo:
    """What a video (or frame folder) declares; width/height are the DISPLAYED size."""

    path: Path
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    frame_count: int | None
    fps: float | None
    duration_s: float | None
    codec: str
    pixel_format: str
    has_audio: bool
    is_frame_folder: bool


@dataclass
class Frame:
    """One decoded frame: ``index`` counts ALL decoded frames in presentation order."""

    index: int
    pts_s: float | None
    image: np.ndarray  # HxWx3 uint8 RGB, displayed orientation


def normalize_rotation(degrees: float) -> int:
    """Round to the nearest multiple of 90 and map into {0, 90, 180, 270}."""
    return int(round(degrees / 90.0)) * 90 % 360


def apply_rotation(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a decoded HxWxC image counter-clockwise by ``rotation`` degrees."""
    k = normalize_rotation(rotation) // 90
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def check_dims(width: int, height: int, limits: MediaLimits, what: str) -> None:
    if width > limits.max_width or height > limits.max_height:
        raise MediaError(
            "dimensions_too_large",
            f"{what} is {width}x{height} but the limit is {limits.max_width}x"
            f"{limits.max_height}; downscale it (e.g. to 1920x1080) and try again.",
        )
    if width * height > limits.max_pixels:
        raise MediaError(
            "dimensions_too_large",
            f"{what} has {width * height} pixels per frame, over the limit of "
            f"{limits.max_pixels}; downscale it and try again.",
        )


def check_count(count: int, limits: MediaLimits, what: str) -> None:
    if count > limits.max_frames:
        raise MediaError(
            "too_many_frames",
            f"{what} has {count} frames, over the limit of {limits.max_frames}; "
            "cut it into shorter clips or lower the frame rate.",
        )


def check_duration(seconds: float, limits: MediaLimits, what: str) -> None:
    if seconds > limits.max_duration_s:
        raise MediaError(
            "too_long",
            f"{what} lasts {seconds:.1f} s, over the limit of {limits.max_duration_s:.0f} s; "
            "cut it into shorter clips.",
        )


def check_range(start: int, end: int | None, stride: int) -> None:
    if start < 0 or stride < 1 or (end is not None and end <= start):
        raise MediaError(
            "frame_range",
            f"invalid frame range start={start}, end={end}, stride={stride}: need "
            "0 <= start < end and stride >= 1.",
        )


def past_end(start: int, total: int) -> MediaError:
    return MediaError(
        "frame_range",
        f"start frame {start} is outside the video, which has {total} frames "
        f"(valid start: 0..{max(total - 1, 0)}).",
    )
