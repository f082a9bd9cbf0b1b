"""Segment one video through a backend: decode -> resize -> step -> masks at original size.

Used by ``isvos segment`` (and later by the workers). Torch-free: the backend owns the
model. Frame ``i`` is the i-th decoded frame in presentation order; masks given for frame
k start their objects at k; frames before the first mask get empty label maps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from isvos.processing import (
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)
from service.backends.base import Backend
from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.masks import load_mask_input, write_indexed_png
from service.media.overlay import OverlayWriter, write_preview
from service.media.rle import write_rle_json
from service.media.video import BackgroundDecoder, probe_video

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
    psize = processing_size(info.height, info.width, request.short_side)
    out = request.out_dir
    mask_dir = out / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    total = _expected_frames(info.frame_count, request)
    overlay = (
        OverlayWriter(out / "overlay.mp4", info.width, info.height, info.fps or 24.0)
        if request.overlay
        else None
    )
    previews: list[tuple[np.ndarray, np.ndarray]] = []
    preview_every = max((total or PREVIEW_FRAMES) // PREVIEW_FRAMES, 1)
    all_ids = sorted({int(i) for m in prompts.values() for i in np.unique(m) if i})
    state: dict = {"handle": None, "step": 0}
    timestamps: list[float | None] = []
    started = time.perf_counter()
    decoder = BackgroundDecoder(
        request.video, request.limits, request.start, request.end, request.stride
    )

    def segmented():
        """Yields (frame index, labels at original size) and writes PNG/overlay/preview."""
        for frame in decoder:
            prompt = prompts.get(frame.index)
            if state["handle"] is None and prompt is not None:
                state["handle"] = backend.open(uuid.uuid4().hex, psize, request.memory_options)
            labels = _segment_frame(backend, state, frame.image, prompt, psize, size, frame.index)
            write_indexed_png(mask_dir / f"{frame.index:05d}.png", labels)
            timestamps.append(frame.pts_s)
            if overlay is not None:
                overlay.write_frame(frame.image, labels)
            if (len(timestamps) - 1) % preview_every == 0 and len(previews) < PREVIEW_FRAMES:
                previews.append((frame.image, labels))
            if progress is not None:
                progress(len(timestamps), total)
            yield frame.index, labels

    try:
        if request.rle:
            write_rle_json(out / "masks.json", segmented(), all_ids, size=size)
        else:
            for _ in segmented():
                pass
    finally:
        decoder.close()
        if overlay is not None:
            overlay.close()
        if state["handle"] is not None:
            backend.close(state["handle"])
    if not timestamps:
        raise MediaError("frame_range", f"no frames were decoded from frame {request.start} on")
    if state["handle"] is None:
        raise MediaError(
            "frame_range", f"no decoded frame carries the masks (given for frame {first_prompt})"
        )
    seconds = time.perf_counter() - started
    outputs = {"masks": str(mask_dir)}
    if request.rle:
        outputs["rle"] = str(out / "masks.json")
    if overlay is not None:
        outputs["overlay"] = str(out / "overlay.mp4")
        write_preview(out / "preview.png", previews)
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


def _expected_frames(frame_count: int | None, request: SegmentRequest) -> int | None:
    if frame_count is None:
        return None
    end = frame_count if request.end is None else min(request.end, frame_count)
    return max(0, -(-(end - request.start) // request.stride))


def _segment_frame(
    backend: Backend,
    state: dict,
    image: np.ndarray,
    prompt: np.ndarray | None,
    psize: tuple[int, int],
    size: tuple[int, int],
    frame_index: int,
) -> np.ndarray:
    """One frame through the backend; empty labels before the first prompt."""
    if state["handle"] is None:
        return np.zeros(size, np.uint8)
    masks = None
    if prompt is not None:
        masks = {
            o: m for o, m in masks_from_labels(resize_labels(prompt, psize)).items() if m.any()
        }
        if not masks:
            raise MediaError(
                "mask_empty",
                f"the masks of frame {frame_index} vanish at the processing size "
                f"{psize[1]}x{psize[0]}; raise --size",
            )
    result = backend.step(state["handle"], state["step"], resize_frame(image, psize), masks)
    state["step"] += 1
    return probabilities_to_labels(result.probabilities, result.object_ids, size)
