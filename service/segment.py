"""Segment one video through a backend: decode -> resize -> step -> masks at original size.

Used by ``isvos segment`` (and later by the workers). Torch-free: the backend owns the
model. Frame ``i`` is the i-th decoded frame in presentation order; masks given for frame
k start their objects at k; frames before the first mask get empty label maps.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from isvos.processing import (
    MIN_PROCESSING_SIDE,
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)
from service.backends.base import Backend
from service.media.base import check_range
from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.masks import load_mask_input, write_indexed_png
from service.media.overlay import OverlayWriter, write_preview
from service.media.rle import write_rle_json
from service.media.video import BackgroundDecoder, Frame, probe_video

PREVIEW_FRAMES = 8


@dataclass
class SegmentRequest:
    video: Path
    masks: str | Path | list[Path]
    out_dir: Path
    short_side: int
    memory_options: dict = field(default_factory=dict)
    overlay: bool = False
    rle: bool = False
    start: int = 0
    end: int | None = None
    stride: int = 1
    resize_masks: bool = False
    limits: MediaLimits = field(default_factory=MediaLimits)
    # FFmpeg decoding threads: 0 = one per core; 1 when the model runs on the same CPU,
    # so that decoder threads do not preempt the model's threads.
    decode_threads: int = 0


@dataclass
class SegmentSummary:
    frames: int
    objects: list[int]
    width: int
    height: int
    processing_size: tuple[int, int]
    seconds: float
    frames_per_second: float
    timestamps_s: list[float | None]
    outputs: dict[str, str]


def segment_video(
    backend: Backend,
    request: SegmentRequest,
    progress: Callable[[int, int | None], None] | None = None,
) -> SegmentSummary:
    check_range(request.start, request.end, request.stride)
    if request.short_side < MIN_PROCESSING_SIDE:
        raise MediaError("invalid_size", f"--size must be at least {MIN_PROCESSING_SIDE} pixels")
    started = time.perf_counter()
    # Decoding starts at once, overlapping the probe, the mask loading and the session's
    # opening; the decoder checks the same limits before it decodes anything.
    decoder = BackgroundDecoder(
        request.video,
        request.limits,
        request.start,
        request.end,
        request.stride,
        threads=request.decode_threads,
        prepare=lambda frame: _with_model_input(frame, request.short_side),
    )
    try:
        return _segment(backend, request, decoder, progress, started)
    finally:
        decoder.close()


def _segment(
    backend: Backend,
    request: SegmentRequest,
    decoder: BackgroundDecoder,
    progress: Callable[[int, int | None], None] | None,
    started: float,
) -> SegmentSummary:
    info = probe_video(request.video, request.limits)
    size = (info.height, info.width)
    prompts = load_mask_input(
        request.masks, size, request.limits, request.resize_masks, num_frames=info.frame_count
    )
    if request.end is not None and request.end <= request.start:
        raise MediaError(
            "frame_range", f"--end {request.end} must be after --start {request.start}"
        )
    first_prompt = min(prompts)
    if first_prompt < request.start:
        raise MediaError(
            "frame_range",
            f"the masks are for frame {first_prompt}, before --start {request.start}",
        )
    off_grid = [f for f in prompts if (f - request.start) % request.stride]
    if off_grid:
        raise MediaError(
            "frame_range",
            f"masks are given for frames {off_grid[:5]}, which --start {request.start} "
            f"--stride {request.stride} skips; give masks on processed frames",
        )
    psize = processing_size(info.height, info.width, request.short_side)
    out = request.out_dir
    mask_dir = out / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    total = _expected_frames(info.frame_count, request)
    all_ids = sorted({int(i) for m in prompts.values() for i in np.unique(m) if i})
    handle = None
    step = 0
    overlay = (
        OverlayWriter(out / "overlay.mp4", info.width, info.height, info.fps or 24.0)
        if request.overlay
        else None
    )
    writer = _OutputWriter(out, size, all_ids, total, request, overlay, progress)
    try:
        for frame, model_input in decoder:
            writer.raise_if_failed()
            prompt = prompts.get(frame.index)
            if handle is None and prompt is not None:
                handle = backend.open(uuid.uuid4().hex, psize, request.memory_options)
            result = None
            if handle is not None:
                masks = _prompt_masks(prompt, psize, frame.index) if prompt is not None else None
                result = backend.step(handle, step, model_input, masks)
                step += 1
            writer.put(frame, result)
        writer.finish()
    finally:
        writer.close()
        if handle is not None:
            backend.close(handle)
    timestamps = writer.timestamps
    if not timestamps:
        raise MediaError("frame_range", f"no frames were decoded from frame {request.start} on")
    if handle is None:
        raise MediaError(
            "frame_range", f"no decoded frame carries the masks (given for frame {first_prompt})"
        )
    seconds = time.perf_counter() - started
    outputs = {"masks": str(mask_dir)}
    if request.rle:
        outputs["rle"] = str(out / "masks.json")
    if overlay is not None:
        outputs["overlay"] = str(out / "overlay.mp4")
        write_preview(out / "preview.png", writer.previews)
        outputs["preview"] = str(out / "preview.png")
    summary = SegmentSummary(
        frames=len(timestamps),
        objects=all_ids,
        width=info.width,
        height=info.height,
        processing_size=psize,
        seconds=round(seconds, 3),
        frames_per_second=round(len(timestamps) / max(seconds, 1e-9), 2),
        timestamps_s=timestamps,
        outputs=outputs,
    )
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def _with_model_input(frame: Frame, short_side: int) -> tuple[Frame, np.ndarray]:
    """The frame and its copy at the processing size (every frame has the first's size)."""
    height, width = frame.image.shape[:2]
    return frame, resize_frame(frame.image, processing_size(height, width, short_side))


def _expected_frames(frame_count: int | None, request: SegmentRequest) -> int | None:
    if frame_count is None:
        return None
    end = frame_count if request.end is None else min(request.end, frame_count)
    return max(0, -(-(end - request.start) // request.stride))


def _prompt_masks(
    prompt: np.ndarray, psize: tuple[int, int], frame_index: int
) -> dict[int, np.ndarray]:
    masks = {o: m for o, m in masks_from_labels(resize_labels(prompt, psize)).items() if m.any()}
    if not masks:
        raise MediaError(
            "mask_empty",
            f"the masks of frame {frame_index} vanish at the processing size "
            f"{psize[1]}x{psize[0]}; raise --size",
        )
    return masks


_DONE = object()


class _OutputWriter:
    """Turns step results into outputs on a thread of its own, so writing overlaps the model.

    Per frame: probabilities -> labels at the original size, indexed PNG, overlay frame,
    preview, RLE (streamed). Errors are re-raised in the caller.
    """

    def __init__(self, out, size, object_ids, total, request, overlay, progress) -> None:
        self.out = out
        self.size = size
        self.object_ids = object_ids
        self.total = total
        self.rle = request.rle
        self.overlay = overlay
        self.progress = progress
        self.timestamps: list[float | None] = []
        self.previews: list[tuple[np.ndarray, np.ndarray]] = []
        self.preview_every = max((total or PREVIEW_FRAMES) // PREVIEW_FRAMES, 1)
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="isvos-writer", daemon=True)
        self.thread.start()

    def put(self, frame, result) -> None:
        while True:
            self.raise_if_failed()
            try:
                self.queue.put((frame, result), timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.put(_DONE, None)
        self.thread.join()
        self.raise_if_failed()

    def close(self) -> None:
        """Stop the thread (dropping pending frames after an error), then close the overlay."""
        if self.thread.is_alive():
            self.stopping.set()
            while self.thread.is_alive():
                try:  # unblock a thread waiting for work
                    self.queue.put((_DONE, None), timeout=0.1)
                except queue.Full:
                    pass
                self.thread.join(timeout=0.1)
        if self.overlay is not None:
            self.overlay.close()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _items(self):
        while True:
            frame, result = self.queue.get()
            if frame is _DONE or self.stopping.is_set():
                return
            if result is None:
                labels = np.zeros(self.size, np.uint8)
            else:
                labels = probabilities_to_labels(result.probabilities, result.object_ids, self.size)
            write_indexed_png(self.out / "masks" / f"{frame.index:05d}.png", labels)
            self.timestamps.append(frame.pts_s)
            if self.overlay is not None:
                self.overlay.write_frame(frame.image, labels)
            count = len(self.timestamps)
            if (count - 1) % self.preview_every == 0 and len(self.previews) < PREVIEW_FRAMES:
                self.previews.append((frame.image, labels))
            if self.progress is not None:
                self.progress(count, self.total)
            yield frame.index, labels

    def _run(self) -> None:
        try:
            if self.rle:
                write_rle_json(
                    self.out / "masks.json", self._items(), self.object_ids, size=self.size
                )
            else:
                for _ in self._items():
                    pass
        except BaseException as exc:  # handed to the caller
            self.error = exc
