"""Segment one video file through a backend: what ``isvos segment`` (and the workers) run.

Decoding (a background thread, with the resize to the processing size), then the one loop
of ``service.runner``, then the outputs of ``service.sinks.DirectorySink``. Torch-free: the
backend owns the model. Frame ``i`` is the i-th decoded frame in presentation order and is
step ``i`` of the session; masks given for frame k start their objects at k; frames before
the first mask get empty label maps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from isvos.config import MemoryOptions
from isvos.errors import IsvosError
from isvos.limits import MIN_PROCESSING_SIDE
from isvos.processing import processing_size, resize_frame
from service.backends.base import Backend
from service.media.base import Frame, VideoInfo, check_range
from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.masks import load_mask_input
from service.media.video import BackgroundDecoder, probe_video
from service.runner import (
    CancelToken,
    OutputSink,
    Progress,
    RecordSink,
    Resume,
    RunResult,
    SessionPlan,
    from_iterator,
    prompted,
    run_session,
)
from service.sinks import DirectorySink


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


@dataclass
class PreparedVideo:
    """A request checked against its video: probed, masks loaded and validated."""

    info: VideoInfo
    prompts: dict[int, np.ndarray]  # frame index -> label map at the original size
    processing_size: tuple[int, int]
    object_ids: list[int]
    total: int | None  # frames the run will write, when the container says
    # frame index -> objects to forget before that frame (a job's revisions)
    removals: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def frames_before(self, index: int, request: SegmentRequest) -> int:
        """Frames the request processes before video frame ``index``."""
        return max(0, -(-(index - request.start) // request.stride))

    def plan(self, session_id: str, request: SegmentRequest, epoch: int = 0) -> SessionPlan:
        return SessionPlan(
            session_id, (self.info.height, self.info.width), self.processing_size,
            dict(request.memory_options), request.stride, epoch,
        )  # fmt: skip


def prepare_video(request: SegmentRequest) -> PreparedVideo:
    """Probe the video and validate the masks and the range against it (MediaError)."""
    check_range(request.start, request.end, request.stride)
    if request.short_side < MIN_PROCESSING_SIDE:
        raise MediaError(
            "invalid_size", f"the processing size must be at least {MIN_PROCESSING_SIDE} pixels"
        )
    info = probe_video(request.video, request.limits)
    size = (info.height, info.width)
    prompts = load_mask_input(
        request.masks, size, request.limits, request.resize_masks, num_frames=info.frame_count
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
    if request.end is not None and first_prompt >= request.end:
        raise MediaError(
            "frame_range", f"the masks are for frame {first_prompt}, at or after --end"
        )
    ids = sorted({int(i) for m in prompts.values() for i in np.unique(m) if i})
    max_objects = _memory_options(request.memory_options).max_objects
    if len(ids) > max_objects:
        raise MediaError(
            "too_many_objects",
            f"the masks hold {len(ids)} objects, over the session limit of {max_objects} "
            "(the max_objects memory option)",
        )
    psize = processing_size(info.height, info.width, request.short_side)
    return PreparedVideo(info, prompts, psize, ids, _expected_frames(info.frame_count, request))


async def segment_video(
    backend: Backend,
    request: SegmentRequest,
    progress: Callable[[Progress], None] | None = None,
    *,
    session_id: str | None = None,
    cancel: CancelToken | None = None,
) -> SegmentSummary:
    """Segment ``request.video`` into ``request.out_dir``; see the module docstring."""
    decoder = start_decoder(request)  # decoding overlaps the probe and the mask loading
    try:
        prepared = prepare_video(request)
        info = prepared.info
        sink = DirectorySink(
            request.out_dir, (info.height, info.width), prepared.object_ids,
            total=prepared.total, rle=request.rle,
            overlay_fps=(info.fps or 24.0) if request.overlay else None,
        )  # fmt: skip
        result = await run_video(
            backend, request, prepared, sink, decoder, session_id=session_id or uuid.uuid4().hex,
            progress=progress, cancel=cancel,
        )  # fmt: skip
    finally:
        decoder.close()
    summary = SegmentSummary(
        frames=result.frames_written,
        objects=prepared.object_ids,
        width=info.width,
        height=info.height,
        processing_size=prepared.processing_size,
        seconds=round(result.seconds, 3),
        frames_per_second=round(result.frames_written / max(result.seconds, 1e-9), 2),
        timestamps_s=sink.timestamps,
        outputs=sink.outputs(),
    )
    (request.out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary


def start_decoder(request: SegmentRequest, first: int | None = None) -> BackgroundDecoder:
    """Decode the request's frames (from ``first`` when resuming) on a background thread,
    each with its copy at the processing size; the decoder checks the request's limits
    before it decodes anything."""
    start = request.start if first is None else max(request.start, first)
    return BackgroundDecoder(
        request.video, request.limits, start, request.end, request.stride,
        threads=request.decode_threads,
        prepare=lambda frame: _with_model_input(frame, request.short_side),
    )  # fmt: skip


async def run_video(
    backend: Backend,
    request: SegmentRequest,
    prepared: PreparedVideo,
    sink: OutputSink,
    decoder: BackgroundDecoder,
    *,
    session_id: str,
    epoch: int = 0,
    resume: Resume | None = None,
    records: RecordSink | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> RunResult:
    """The loop over a prepared video's decoded frames into ``sink``."""
    plan = prepared.plan(session_id, request, epoch)
    max_objects = _memory_options(request.memory_options).max_objects
    frames = prompted(
        from_iterator(decoder), prepared.prompts, prepared.processing_size, max_objects,
        removals=prepared.removals,
    )  # fmt: skip
    total = prepared.total
    if resume is not None and total is not None:
        total -= prepared.frames_before(resume.first_index, request)
    result = await run_session(
        backend, plan, frames, sink, resume=resume, records=records, progress=progress,
        cancel=cancel, total=total,
    )  # fmt: skip
    if result.handle is None and resume is None:
        if not result.frames_written:
            raise MediaError("frame_range", f"no frames were decoded from frame {request.start} on")
        raise MediaError(
            "frame_range",
            f"no decoded frame carries the masks (given for frame {min(prepared.prompts)})",
        )
    return result


def _memory_options(options: dict) -> MemoryOptions:
    try:
        return MemoryOptions.from_dict(dict(options))
    except (TypeError, ValueError) as exc:
        raise IsvosError("invalid_argument", f"bad memory options: {exc}") from exc


def _with_model_input(frame: Frame, short_side: int) -> tuple[Frame, np.ndarray]:
    """The frame and its copy at the processing size (every frame has the first's size)."""
    height, width = frame.image.shape[:2]
    return frame, resize_frame(frame.image, processing_size(height, width, short_side))


def _expected_frames(frame_count: int | None, request: SegmentRequest) -> int | None:
    if frame_count is None:
        return None
    end = frame_count if request.end is None else min(request.end, frame_count)
    return max(0, -(-(end - request.start) // request.stride))
