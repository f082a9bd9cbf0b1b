"""One job on a worker: its video through the segmentation loop, fenced at every write.

- Frames go to the blob store as PNGs as they come (``FrameBlobSink``). Each frame is
  written to a temporary name, then reported (a fenced Lua call: progress, the job's event
  stream), then committed: a worker that lost the job stops at its next frame and commits
  nothing more.
- The session record is persisted as it changes (``JobRecordStore``: the header in Redis,
  written only by the fence holder; slots in the blob store), so the next holder primes a
  new session (the next epoch) and resumes after the last memorised frame.
- When every frame is written, the requested result files are made (``outputs``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isvos.errors import IsvosError
from isvos.limits import DEFAULT_SESSION_LIMITS
from service.backends.base import Backend
from service.blobs import LocalBlobStore, job_prefix
from service.jobs.models import JobOptions
from service.jobs.revisions import apply_revisions, job_revisions
from service.jobs.store import JobStore
from service.logs import log_event
from service.media.base import Frame
from service.media.limits import MediaLimits
from service.media.masks import encode_indexed_png
from service.records import RecordStore
from service.runner import CancelToken, Resume
from service.segment import SegmentRequest, prepare_video, run_video, start_decoder
from service.worker.outputs import frame_key, make_outputs

log = logging.getLogger("isvos.worker")
STATS_EVERY_S = 1.0
# A job's session epoch is its fence shifted: the epochs a backend client moves to when it
# re-primes a lost session (epoch + 1, + 2, ...) stay below the next holder's.
EPOCH_SHIFT = 16
CALL_TIMEOUT_S = 60.0


class Fenced(IsvosError):
    """This worker no longer holds the job (another claimed it, or it was cancelled)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("cancelled", f"job {job_id} moved on: this worker no longer holds it")


@dataclass
class JobContext:
    job_id: str
    fence: int
    store: JobStore
    blobs: LocalBlobStore
    loop: asyncio.AbstractEventLoop
    cancel: CancelToken

    @property
    def epoch(self) -> int:
        return self.fence << EPOCH_SHIFT

    def call(self, coroutine):
        """Run ``coroutine`` on the worker's loop from a writer thread, and wait."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(CALL_TIMEOUT_S)

    async def check(self) -> None:
        """``Fenced`` unless this worker still holds the job."""
        if self.cancel.cancelled or not await self.store.holds(self.job_id, self.fence):
            raise Fenced(self.job_id)


class JobRecordStore(RecordStore):
    """Record header in Redis (fenced), with every header kept in the job's record history;
    slot payloads in the blob store, kept while the job lives (the history's records name
    them: a revision resumes from one). A revision rewrites the slots from its frame on."""

    keep_slots = True

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.prefix = f"{job_prefix(context.job_id)}/record"

    async def put_header(self, data: bytes, next_frame_index: int | None = None) -> None:
        c = self.context
        if not await c.store.put_record_header(c.job_id, c.fence, data, next_frame_index):
            raise Fenced(c.job_id)

    async def get_header(self) -> bytes | None:
        return await self.context.store.record_header(self.context.job_id)

    async def put_slot(self, index: int, data: bytes) -> None:
        await self.context.check()  # a stale worker must not overwrite the holder's slots
        await asyncio.to_thread(self.context.blobs.put, f"{self.prefix}/slot-{index}.bin", data)

    async def get_slot(self, index: int) -> bytes | None:
        return await asyncio.to_thread(self.context.blobs.get, f"{self.prefix}/slot-{index}.bin")

    async def delete_slot(self, index: int) -> None:
        await self.context.check()
        await asyncio.to_thread(self.context.blobs.delete, f"{self.prefix}/slot-{index}.bin")

    async def slot_indices(self) -> list[int]:
        keys = await asyncio.to_thread(self.context.blobs.list, self.prefix)
        return [int(Path(k).stem.split("-", 1)[1]) for k in keys]


class FrameBlobSink:
    """Frame PNGs into the blob store, each committed only after a fenced progress report."""

    def __init__(self, context: JobContext, frames_before: int, total: int | None) -> None:
        self.context = context
        self.done = frames_before  # frames written by earlier holders of the job
        self.total = total
        self.started = time.perf_counter()
        self.written = 0
        self.latencies: list[float] = []
        self.last = time.perf_counter()
        self.last_stats = time.perf_counter()

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        c = self.context
        if c.cancel.cancelled:
            raise Fenced(c.job_id)
        with c.blobs.writer(frame_key(c.job_id, frame.index)) as writer:
            writer.write(encode_indexed_png(labels))
            self.done += 1
            self.written += 1
            now = time.perf_counter()
            fps = self.written / max(now - self.started, 1e-9)
            fields = {"frames_done": str(self.done), "fps": f"{fps:.2f}",
                      "updated_at": repr(time.time())}  # fmt: skip
            if self.written == 1:
                fields["first_frame_at"] = fields["updated_at"]
            if self.total is not None and self.done >= self.total:
                fields["last_frame_at"] = fields["updated_at"]
            event = {"type": "progress", "frame": str(frame.index),
                     "frames_done": str(self.done), "fps": f"{fps:.2f}"}  # fmt: skip
            if self.total is not None:
                event["frames_total"] = str(self.total)
            if not c.call(c.store.report(c.job_id, c.fence, fields, event, steps=1)):
                writer.abort()
                c.cancel.cancel(f"job {c.job_id} moved on: this worker no longer holds it")
                raise Fenced(c.job_id)
        self.latencies.append(now - self.last)
        self.last = now
        if now - self.last_stats >= STATS_EVERY_S:
            self.flush_stats()

    def flush_stats(self) -> None:
        if self.latencies:
            latencies, self.latencies = self.latencies, []
            self.context.call(self.context.store.count_frames(len(latencies), latencies))
        self.last_stats = time.perf_counter()

    def finish(self) -> None:
        self.flush_stats()

    def close(self) -> None:
        pass


def segment_request(job: dict[str, str], blobs: LocalBlobStore, limits: MediaLimits,
                    default_size: int, local_cpu: bool) -> SegmentRequest:  # fmt: skip
    """The job's ``SegmentRequest`` (the same one ``isvos segment`` builds)."""
    import json

    options = JobOptions.model_validate_json(job["options"])
    mask_keys = json.loads(job["mask_keys"])
    masks = [blobs.local_path(k) for k in mask_keys]
    return SegmentRequest(
        video=blobs.local_path(job["video_key"]),
        masks=masks[0] if len(masks) == 1 else masks,
        out_dir=blobs.local_path(f"{job_prefix(job['id'])}/outputs"),
        short_side=options.size or default_size,
        memory_options=options.memory.model_dump(),
        start=options.start,
        end=options.end,
        stride=options.stride,
        resize_masks=options.resize_masks,
        limits=limits,
        decode_threads=1 if local_cpu else 0,
    )


async def run_job(
    context: JobContext,
    job: dict[str, str],
    backend: Backend,
    request: SegmentRequest,
    progress=None,
) -> list[str]:
    """Run the job to its last frame; returns the result formats written."""
    c = context
    prepared = await asyncio.to_thread(prepare_video, request)
    revisions = job_revisions(job)
    if revisions:
        prepared = await asyncio.to_thread(apply_revisions, prepared, revisions, c.blobs)
    records = JobRecordStore(c)
    try:
        record = await records.load(DEFAULT_SESSION_LIMITS)
    except IsvosError as exc:  # e.g. a slot lost with the last second of Redis writes
        log_event(log, "record_unusable", logging.WARNING, trace_id=c.job_id, error=exc.message)
        record = None
    resume = None
    frames_before = 0
    if record is not None and record.header.next_frame_index is not None:
        # A revision resumes at its frame, later than its record's next frame (the frames
        # in between are kept; stepping them would change nothing).
        at = max(int(job.get("resume_at") or -1), record.header.next_frame_index)
        resume = Resume(record, epoch=c.epoch, resume_index=at)
        frames_before = prepared.frames_before(resume.first_index, request)
        report = {"resumed_from": str(resume.first_index)}
        if not await c.store.report(c.job_id, c.fence, report):
            raise Fenced(c.job_id)
    decoder = start_decoder(request, resume.first_index if resume else None)
    sink = FrameBlobSink(c, frames_before, prepared.total)
    try:
        await run_video(
            backend, request, prepared, sink, decoder, session_id=c.job_id, epoch=c.epoch,
            resume=resume, records=records, progress=progress, cancel=c.cancel,
        )  # fmt: skip
    finally:
        decoder.close()
    options = JobOptions.model_validate_json(job["options"])
    info = prepared.info

    def still_holds() -> bool:
        return c.call(c.store.holds(c.job_id, c.fence))

    return await asyncio.to_thread(
        make_outputs, c.blobs, c.job_id, list(options.outputs), prepared.object_ids,
        (info.height, info.width), request.video, info.fps, still_holds,
        lambda: c.cancel.cancelled,
    )  # fmt: skip
