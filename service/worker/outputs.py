"""A job's result files, made from its frame PNGs once every frame is written.

Frames are written one PNG each as the job runs (``jobs/<id>/frames/00000.png``); when it
succeeds the worker turns them into the formats the job asked for: a zip of the PNGs, COCO
RLE JSON, an overlay video and a preview sheet (the overlay and preview re-decode the video).
Each file is committed atomically under ``jobs/<id>/outputs/``.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from isvos.errors import IsvosError
from service.blobs import LocalBlobStore, job_prefix
from service.jobs.models import OUTPUT_FILES
from service.media.masks import read_indexed_png
from service.media.overlay import OverlayWriter, write_preview
from service.media.rle import RleJsonWriter
from service.media.video import iter_frames
from service.sinks import PREVIEW_FRAMES


def frame_key(job_id: str, index: int) -> str:
    return f"{job_prefix(job_id)}/frames/{index:05d}.png"


def output_key(job_id: str, fmt: str) -> str:
    return f"{job_prefix(job_id)}/outputs/{OUTPUT_FILES[fmt][0]}"


def frame_indices(blobs: LocalBlobStore, job_id: str) -> list[int]:
    keys = blobs.list(f"{job_prefix(job_id)}/frames")
    return sorted(int(Path(k).stem) for k in keys if k.endswith(".png"))


def make_outputs(
    blobs: LocalBlobStore,
    job_id: str,
    formats: list[str],
    object_ids: list[int],
    size: tuple[int, int],
    video: Path,
    fps: float | None,
    still_holds: Callable[[], bool],
    cancelled: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Write the requested formats; ``still_holds`` is asked before each file is committed
    and ``cancelled`` between frames (a worker that lost the job writes nothing and stops
    at once). Returns the formats written."""
    indices = frame_indices(blobs, job_id)
    written = []
    for fmt in formats:
        with blobs.writer(output_key(job_id, fmt)) as writer:
            if fmt == "png_zip":
                _zip(blobs, job_id, _watched(indices, cancelled), writer)
            elif fmt == "rle_json":
                _rle(blobs, job_id, _watched(indices, cancelled), object_ids, size, writer)
            else:
                _overlay_or_preview(blobs, job_id, fmt, _watched(indices, cancelled), size,
                                    video, fps, writer)  # fmt: skip
            if not still_holds():
                writer.abort()
                return written
        written.append(fmt)
    return written


def _watched(indices: list[int], cancelled: Callable[[], bool]) -> list[int]:
    """``indices``, refusing to go on once ``cancelled`` says so (checked per frame)."""

    class Watched(list):
        def __iter__(self):
            for index in super().__iter__():
                if cancelled():
                    raise IsvosError("cancelled", "the job moved on while its results were made")
                yield index

    return Watched(indices)


def _labels(blobs: LocalBlobStore, job_id: str, indices: list[int]) -> Iterator[np.ndarray]:
    for index in indices:
        yield read_indexed_png(blobs.local_path(frame_key(job_id, index)))


def _temporary(writer, suffix: str) -> Path:
    return writer.final.with_name(f".{writer.final.name}.{uuid.uuid4().hex}{suffix}")


def _zip(blobs, job_id, indices, writer) -> None:
    # PNGs are already compressed: stored, not deflated.
    with zipfile.ZipFile(writer.file, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in indices:
            archive.write(blobs.local_path(frame_key(job_id, index)), f"masks/{index:05d}.png")


def _rle(blobs, job_id, indices, object_ids, size, writer) -> None:
    # RleJsonWriter writes a file of its own; stream it into the blob afterwards.
    temporary = _temporary(writer, ".rle")
    rle = RleJsonWriter(temporary, object_ids, size)
    try:
        for index, labels in zip(indices, _labels(blobs, job_id, indices), strict=True):
            rle.write(index, labels)
        rle.close()
        with open(temporary, "rb") as source:
            while chunk := source.read(1 << 20):
                writer.write(chunk)
    finally:
        rle.abort()
        temporary.unlink(missing_ok=True)


def _overlay_or_preview(blobs, job_id, fmt, indices, size, video, fps, writer) -> None:
    height, width = size
    wanted = set(indices)
    every = max(len(indices) // PREVIEW_FRAMES, 1)
    previews = []
    overlay = None
    temporary = _temporary(writer, ".mp4")
    if fmt == "overlay_mp4":
        overlay = OverlayWriter(temporary, width, height, fps or 24.0)
    try:
        last = max(wanted) if wanted else -1
        count = 0
        for frame in iter_frames(video, end=last + 1):
            if frame.index not in wanted:
                continue
            labels = read_indexed_png(blobs.local_path(frame_key(job_id, frame.index)))
            if overlay is not None:
                overlay.write_frame(frame.image, labels)
            elif count % every == 0 and len(previews) < PREVIEW_FRAMES:
                previews.append((frame.image, labels))
            count += 1
        if overlay is not None:
            overlay.close()
            with open(temporary, "rb") as source:
                while chunk := source.read(1 << 20):
                    writer.write(chunk)
        else:
            buffer = io.BytesIO()
            write_preview(buffer, previews)
            writer.write(buffer.getvalue())
    finally:
        if overlay is not None:
            overlay.close()
        temporary.unlink(missing_ok=True)
