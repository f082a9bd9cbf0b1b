"""Mask visualisation: tinted overlays, an H.264 overlay video writer, PNG contact sheets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np
from PIL import Image

from .masks import PALETTE_RGB

_CONTAINER_FORMATS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
ImageAndLabels = tuple[np.ndarray, np.ndarray]


def render_overlay(
    image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, outline: int = 2
) -> np.ndarray:
    """RGB image tinted with each object's DAVIS colour (``alpha``) plus an inner outline
    ``outline`` px wide in the solid object colour. Returns a new HxWx3 uint8 array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    lab = np.ascontiguousarray(labels, dtype=np.uint8)
    obj = lab > 0
    out = image.copy()
    if not obj.any():
        return out
    colours = PALETTE_RGB[lab]
    blended = image.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    out[obj] = np.clip(blended[obj] + 0.5, 0, 255).astype(np.uint8)
    if outline > 0:
        kernel = np.ones((2 * outline + 1, 2 * outline + 1), np.uint8)
        lo = cv2.erode(lab, kernel, borderType=cv2.BORDER_REPLICATE)
        hi = cv2.dilate(lab, kernel, borderType=cv2.BORDER_REPLICATE)
        edge = obj & (lo != hi)
        out[edge] = colours[edge]
    return out


def _even(n: int) -> int:
    return n + (n % 2)


class OverlayWriter:
    """Write overlay frames as H.264 (libx264, yuv420p) video; a context manager.

    Odd frame sizes are padded by one pixel (edge-replicated) to even dimensions,
    as yuv420p requires. MP4/MOV files get ``+faststart`` for web playback.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        crf: int = 20,
        preset: str = "veryfast",
        alpha: float = 0.5,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"invalid size {width}x{height}")
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"invalid fps {fps!r}")
        self.path = Path(path)
        self.width, self.height, self.alpha = width, height, alpha
        self.frames_written = 0
        rate = Fraction(fps).limit_denominator(1001)
        fmt = _CONTAINER_FORMATS.get(self.path.suffix.lower(), "mp4")
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        self._container: Any = av.open(str(self.path), mode="w", format=fmt, options=options)
        try:
            self._stream: Any = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = _even(width), _even(height)
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(crf), "preset": preset}
            self._time_base = Fraction(1) / rate
        except BaseException:
            self._container.close()
            raise
        self._closed = False

    def write_frame(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Encode one RGB frame (height x width x 3) tinted by its label map."""
        if self._closed:
            raise RuntimeError("OverlayWriter is closed")
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, expected {self.width}x{self.height}"
            )
        rgb = render_overlay(image, labels, alpha=self.alpha)
        pad_h, pad_w = self._stream.height - self.height, self._stream.width - self.width
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def contact_sheet(
    images_and_labels: Sequence[ImageAndLabels],
    columns: int = 4,
    thumb_width: int = 320,
    gap: int = 4,
    background: int = 32,
) -> np.ndarray:
    """Grid of overlay thumbnails (``thumb_width`` wide, aspect kept) as HxWx3 uint8."""
    if not images_and_labels:
        raise ValueError("contact_sheet needs at least one frame")
    if columns < 1 or thumb_width < 1:
        raise ValueError("columns and thumb_width must be positive")
    thumbs: list[np.ndarray] = []
    for image, labels in images_and_labels:
        over = render_overlay(image, labels)
        h, w = over.shape[:2]
        th = max(1, round(h * thumb_width / w))
        interp = cv2.INTER_AREA if thumb_width < w else cv2.INTER_LINEAR
        thumbs.append(cv2.resize(over, (thumb_width, th), interpolation=interp))
    cols = min(columns, len(thumbs))
    rows = [thumbs[i : i + cols] for i in range(0, len(thumbs), cols)]
    row_heights = [max(t.shape[0] for t in row) for row in rows]
    sheet_w = cols * thumb_width + (cols + 1) * gap
    sheet_h = sum(row_heights) + (len(rows) + 1) * gap
    sheet = np.full((sheet_h, sheet_w, 3), background, dtype=np.uint8)
    y = gap
    for row, rh in zip(rows, row_heights, strict=True):
        for c, t in enumerate(row):
            x = gap + c * (thumb_width + gap)
            sheet[y : y + t.shape[0], x : x + thumb_width] = t
        y += rh + gap
    return sheet


def write_preview(
    path: str | Path,
    images_and_labels: Sequence[ImageAndLabels],
    columns: int = 4,
    thumb_width: int = 320,
) -> None:
    """Save ``contact_sheet(...)`` as a PNG."""
    sheet = contact_sheet(images_and_labels, columns=columns, thumb_width=thumb_width)
    Image.fromarray(sheet).save(path, format="PNG")
