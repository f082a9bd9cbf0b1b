"""Output sinks of the segmentation loop (``service.runner.OutputSink``). Torch-free.

- ``DirectorySink``: what ``isvos segment`` writes: ``masks/00000.png`` (indexed PNG per
  frame), and optionally ``masks.json`` (COCO RLE), ``overlay.mp4`` and ``preview.png``.
- ``MemorySink``: label maps kept in memory (evaluation, training validation, tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.media.base import Frame
from service.media.masks import write_indexed_png
from service.media.overlay import OverlayWriter, write_preview
from service.media.rle import RleJsonWriter

PREVIEW_FRAMES = 8


class DirectorySink:
    def __init__(
        self,
        out_dir: Path,
        size: tuple[int, int],
        object_ids: list[int],
        *,
        total: int | None = None,
        rle: bool = False,
        overlay_fps: float | None = None,
    ) -> None:
        """``overlay_fps`` set: also write ``overlay.mp4`` and ``preview.png``."""
        self.out = Path(out_dir)
        self.mask_dir = self.out / "masks"
        self.mask_dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.timestamps: list[float | None] = []
        self.rle = RleJsonWriter(self.out / "masks.json", object_ids, size) if rle else None
        self.overlay = None
        if overlay_fps is not None:
            height, width = size
            self.overlay = OverlayWriter(self.out / "overlay.mp4", width, height, overlay_fps)
        self.previews: list[tuple[np.ndarray, np.ndarray]] = []
        self.preview_every = max((total or PREVIEW_FRAMES) // PREVIEW_FRAMES, 1)
        self.finished = False

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        write_indexed_png(self.mask_dir / f"{frame.index:05d}.png", labels)
        self.timestamps.append(frame.pts_s)
        if self.rle is not None:
            self.rle.write(frame.index, labels)
        if self.overlay is not None:
            self.overlay.write_frame(frame.image, labels)
            count = len(self.timestamps)
            if (count - 1) % self.preview_every == 0 and len(self.previews) < PREVIEW_FRAMES:
                self.previews.append((frame.image, labels))

    def finish(self) -> None:
        if self.rle is not None:
            self.rle.close()
        if self.overlay is not None:
            self.overlay.close()
            if self.previews:
                write_preview(self.out / "preview.png", self.previews)
        self.finished = True

    def close(self) -> None:
        if self.rle is not None and not self.finished:
            self.rle.abort()
        if self.overlay is not None:
            self.overlay.close()

    def outputs(self) -> dict[str, str]:
        found = {"masks": str(self.mask_dir)}
        if self.rle is not None:
            found["rle"] = str(self.out / "masks.json")
        if self.overlay is not None:
            found["overlay"] = str(self.out / "overlay.mp4")
            if (self.out / "preview.png").exists():
                found["preview"] = str(self.out / "preview.png")
        return found


class MemorySink:
    """Label maps at the original size, by frame index."""

    def __init__(self) -> None:
        self.labels: dict[int, np.ndarray] = {}

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        self.labels[frame.index] = labels

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass

    def in_order(self) -> list[np.ndarray]:
        return [self.labels[i] for i in sorted(self.labels)]
