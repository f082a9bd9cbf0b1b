"""The one segmentation loop: frames in, a backend session, label maps out. Torch-free.

Every caller runs sessions through ``run_session``: ``isvos segment`` (``service.segment``),
``isvos eval --run`` and training validation (frames in memory), the benchmarks, the job
workers and the gRPC server. The loop

- opens the session at the first frame that carries masks (frames before it get empty
  label maps), or primes it from a record (``Resume``) and continues after it;
- steps every frame with the video's own frame index (the session's index), adding or
  correcting objects where a frame carries masks and forgetting those it removes;
- hands each memorised slot and the record header to a ``RecordSink``, so a caller can
  persist the record incrementally (DESIGN decisions 3 and 12); a record is saved only
  after every frame before it is written, so a run resumed from it loses no frame;
- turns each step's probabilities into a label map at the original size and writes it to
  an ``OutputSink`` on a writer thread of its own, so writing overlaps the model;
- reports progress on the event loop and stops at a ``CancelToken``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from isvos.errors import IsvosError
from isvos.limits import MAX_OBJECT_ID
from isvos.processing import masks_from_labels, probabilities_to_labels, resize_labels
from isvos.record import RecordHeader, SessionRecord, SlotPayload
from service.backends.base import Backend, SessionHandle, StepOutput
from service.media.base import Frame

WRITE_QUEUE = 8  # frames waiting for the writer thread


@dataclass
class FrameInput:
    """One frame for the loop: the decoded frame, its processing-size copy, and what the
    caller attaches to it (masks at processing size, objects to forget before it)."""

    frame: Frame  # ``index`` is the video's frame index; ``image`` at the original size
    model_input: np.ndarray  # RGB uint8 at the processing size
    masks: dict[int, np.ndarray] | None = None
    remove: tuple[int, ...] = ()


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    original_size: tuple[int, int]  # (H, W) of the frames and of the label maps written
    processing_size: tuple[int, int]  # (h, w) the model sees
    memory_options: dict = field(default_factory=dict)
    frame_stride: int = 1
    # The session's epoch on the backend (a job's next holder opens with a later one).
    epoch: int = 0


@dataclass(frozen=True)
class Resume:
    """Continue a session from its record, as epoch ``epoch``, at ``resume_index`` (the
    record's next frame when None); frames before it are skipped."""

    record: SessionRecord
    epoch: int
    resume_index: int | None = None

    @property
    def first_index(self) -> int:
        index = self.resume_index
        return self.record.header.next_frame_index if index is None else index


@dataclass
class Progress:
    frames_written: int  # in this run
    frames_total: int | None  # frames this run will write, when known
    frame_index: int  # video index of the frame just written
    steps: int  # backend steps taken in this run
    elapsed_s: float


@dataclass
class RunResult:
    frames_written: int
    steps: int
    object_ids: list[int]
    first_index: int | None
    last_index: int | None
    seconds: float
    handle: SessionHandle | None


class OutputSink(Protocol):
    """Where label maps go; ``write`` and ``finish`` run on the writer thread."""

    def write(self, frame: Frame, labels: np.ndarray) -> None: ...

    def finish(self) -> None:
        """After the last frame of a successful run."""
        ...

    def close(self) -> None:
        """Always, after ``finish`` or a failure (release files, drop partial outputs)."""
        ...


class RecordSink(Protocol):
    async def save(self, header: RecordHeader, slot: SlotPayload | None) -> None:
        """The record changed: ``header`` is current, ``slot`` the newly memorised one."""
        ...


class CancelToken:
    """Set from any thread; the loop stops before its next frame with ``cancelled``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "the run was cancelled"

    def cancel(self, reason: str | None = None) -> None:
        if reason:
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise IsvosError("cancelled", self.reason)


# ---------------------------------------------------------------------- the loop


async def run_session(
    backend: Backend,
    plan: SessionPlan,
    frames: AsyncIterable[FrameInput],
    sink: OutputSink,
    *,
    resume: Resume | None = None,
    records: RecordSink | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
    total: int | None = None,
    keep_open: bool = False,
    on_open: Callable[[SessionHandle], None] | None = None,
) -> RunResult:
    """Run ``frames`` through one session of ``backend``; see the module docstring.

    ``keep_open`` leaves the session open on the backend, even after a failure (the caller
    closes it); ``on_open`` is told the session's handle as soon as it is open or primed."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    writer = _Writer(sink, plan.original_size, loop, progress, total, started, records)
    steps = _Steps(backend, writer, getattr(backend, "steps_in_flight", 1))
    handle: SessionHandle | None = None
    first_index = last_index = None
    try:
        if resume is not None:
            handle = await backend.prime(plan.session_id, resume.record, epoch=resume.epoch,
                                         resume_index=resume.resume_index)  # fmt: skip
            steps.object_ids |= set(resume.record.header.object_ids)
            if on_open is not None:
                on_open(handle)
        async for item in frames:
            if cancel is not None:
                cancel.raise_if_cancelled()
            writer.raise_if_failed()
            index = item.frame.index
            if resume is not None and index < resume.first_index:
                continue  # written by the run the record came from
            first_index = index if first_index is None else first_index
            last_index = index
            if handle is None and item.masks:
                handle = await backend.open(plan.session_id, plan.processing_size,
                                            plan.memory_options, frame_stride=plan.frame_stride,
                                            epoch=plan.epoch)  # fmt: skip
                if on_open is not None:
                    on_open(handle)
            if handle is None:
                await writer.put(item.frame, None)
            else:
                await steps.step(handle, item)
        await steps.drain()
        await writer.finish()
    finally:
        await steps.abandon()
        await writer.close()
        if handle is not None and not keep_open:
            await _close_quietly(backend, handle)
    return RunResult(
        frames_written=writer.written,
        steps=steps.count,
        object_ids=sorted(steps.object_ids),
        first_index=first_index,
        last_index=last_index,
        seconds=time.perf_counter() - started,
        handle=handle,
    )


class _Steps:
    """A session's steps, up to ``depth`` in flight (a backend that runs one session's steps
    in the order they are sent, like the in-process one, takes the next step as soon as the
    last one ends, with no round trip through the loop). A task of its own hands results to
    the writer in order as they end, so a result never waits for the next frame to arrive
    (a live stream's next frame may depend on it)."""

    def __init__(self, backend: Backend, writer: _Writer, depth: int) -> None:
        self.backend = backend
        self.writer = writer
        self.room = asyncio.Semaphore(max(1, depth))
        self.inflight: deque[tuple[FrameInput, asyncio.Future, tuple | None]] = deque()
        self.queued = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.error: BaseException | None = None
        self.count = 0
        self.object_ids: set[int] = set()
        self.finisher = asyncio.ensure_future(self._finish_in_order())

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    async def step(self, handle: SessionHandle, item: FrameInput) -> None:
        removed = None
        if item.remove:
            await self.drain()  # removals and steps stay in order
            removed = (await self.backend.remove_objects(handle, list(item.remove)), None)
        await self.room.acquire()
        self._raise_if_failed()
        index = item.frame.index
        task = asyncio.ensure_future(self.backend.step(handle, index, item.model_input, item.masks))
        self.inflight.append((item, task, removed))
        self.idle.clear()
        self.queued.set()

    async def _finish_in_order(self) -> None:
        while True:
            await self.queued.wait()
            while self.inflight:
                item, task, record = self.inflight[0]
                try:
                    output = await task
                    self.count += 1
                    self.object_ids |= set(output.object_ids)
                    if output.header is not None:
                        slot = SlotPayload(item.frame.index, item.model_input, output.labels)
                        record = (output.header, slot if output.memorised else None)
                    await self.writer.put(item.frame, output, record)
                except BaseException as exc:  # noqa: BLE001 - raised to the loop
                    self.error = exc
                    self.idle.set()
                    self.room.release()
                    return
                self.inflight.popleft()
                self.room.release()
            self.queued.clear()
            self.idle.set()

    async def drain(self) -> None:
        """Wait until every step sent so far is finished and handed to the writer."""
        waiter = asyncio.ensure_future(self.idle.wait())
        await asyncio.wait({waiter, self.finisher}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self._raise_if_failed()

    async def abandon(self) -> None:
        """After a failure: stop handing results on; wait for the steps in flight."""
        self.finisher.cancel()
        tasks = [task for _, task, _ in self.inflight]
        self.inflight.clear()
        await asyncio.gather(self.finisher, *tasks, return_exceptions=True)


async def _close_quietly(backend: Backend, handle: SessionHandle) -> None:
    try:
        await backend.close(handle)
    except IsvosError:
        pass  # the session is gone already; nothing to free


# ---------------------------------------------------------------------- sources


def prompt_masks(
    labels: np.ndarray,
    processing_size: tuple[int, int],
    frame_index: int,
    max_objects: int = MAX_OBJECT_ID,
) -> dict[int, np.ndarray]:
    """A prompt label map at the original size -> {object id: mask} at processing size.
    The objects are counted against ``max_objects`` before any mask is allocated."""
    small = resize_labels(labels, processing_size)
    ids = [int(i) for i in np.unique(small) if i]
    if len(ids) > max_objects:
        raise IsvosError(
            "too_many_objects",
            f"frame {frame_index} holds {len(ids)} objects, over the session limit of "
            f"{max_objects}",
        )
    masks = {o: m for o, m in masks_from_labels(small, ids).items() if m.any()}
    if not masks:
        raise IsvosError(
            "mask_empty",
            f"the masks of frame {frame_index} vanish at the processing size "
            f"{processing_size[1]}x{processing_size[0]}; use a larger processing size",
        )
    return masks


async def prompted(
    frames: AsyncIterable[tuple[Frame, np.ndarray]],
    prompts: dict[int, np.ndarray],
    processing_size: tuple[int, int],
    max_objects: int = MAX_OBJECT_ID,
    *,
    removals: dict[int, tuple[int, ...]] | None = None,
) -> AsyncIterator[FrameInput]:
    """``FrameInput``s from (frame, model input) pairs, with ``prompts`` (label maps at the
    original size, by frame index) attached as masks to their frames, and ``removals``
    (objects to forget, by frame index) as their removals."""
    removals = removals or {}
    async for frame, model_input in frames:
        labels = prompts.get(frame.index)
        masks = None
        if labels is not None:
            masks = prompt_masks(labels, processing_size, frame.index, max_objects)
        yield FrameInput(frame, model_input, masks, removals.get(frame.index, ()))


async def from_iterator(items: Iterable, executor: ThreadPoolExecutor | None = None):
    """An async iterator over a blocking iterator (a decoder), pulled on a thread."""
    loop = asyncio.get_running_loop()
    iterator = iter(items)
    end = object()
    while True:
        item = await loop.run_in_executor(executor, next, iterator, end)
        if item is end:
            return
        yield item


# ---------------------------------------------------------------------- writer


class _Writer:
    """Upsamples and writes on one thread, in order; after a frame is written, the record
    that came with it is saved (on the loop, waited for); progress is reported on the loop."""

    def __init__(self, sink, size, loop, progress, total, started, records) -> None:
        self.sink = sink
        self.records = records
        self.size = size
        self.loop = loop
        self.progress = progress
        self.total = total
        self.started = started
        self.written = 0
        self.steps = 0
        self.error: BaseException | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="isvos-writer")
        self.room = asyncio.Semaphore(WRITE_QUEUE)
        self.tasks: set[asyncio.Future] = set()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    async def put(self, frame: Frame, output: StepOutput | None, record=None) -> None:
        await self.room.acquire()
        self.raise_if_failed()
        if output is not None:
            self.steps += 1
        future = self.loop.run_in_executor(
            self.executor, self._write, frame, output, self.steps, record
        )
        self.tasks.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        self.tasks.discard(future)
        self.room.release()
        if future.cancelled():
            return
        error = future.exception()
        if error is not None and self.error is None:
            self.error = error

    def _write(self, frame: Frame, output: StepOutput | None, steps: int, record) -> None:
        if self.error is not None:
            return
        if output is None:
            labels = np.zeros(self.size, np.uint8)
        else:
            labels = probabilities_to_labels(output.probabilities, output.object_ids, self.size)
        self.sink.write(frame, labels)
        self.written += 1
        if record is not None and self.records is not None:
            save = self.records.save(*record)
            asyncio.run_coroutine_threadsafe(save, self.loop).result()
        if self.progress is not None:
            report = Progress(self.written, self.total, frame.index, steps,
                              time.perf_counter() - self.started)  # fmt: skip
            self.loop.call_soon_threadsafe(self.progress, report)

    async def finish(self) -> None:
        await self._drain()
        self.raise_if_failed()
        await self.loop.run_in_executor(self.executor, self.sink.finish)

    async def _drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        if self.error is None and self.tasks:
            self.error = IsvosError("cancelled", "the run stopped before this frame")
        await self._drain()
        try:
            await self.loop.run_in_executor(self.executor, self.sink.close)
        finally:
            self.executor.shutdown(wait=False)
