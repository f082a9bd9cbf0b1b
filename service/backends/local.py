"""The embedded backend: the ISVOS engine in this process (DESIGN decision 9).

The engine runs on one executor thread of its own; the event loop never waits on torch.
Steps of different sessions that are waiting together go through ``Engine.step_many`` as
one batch (the frame encoder runs once for them), as on the Triton server. At most
``max_pending`` steps wait at once; more callers wait for room, so nothing grows without
bound. Admission, fencing and TTL are the engine's ``SessionManager``.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from isvos.engine import Engine, SessionManager
from isvos.errors import IsvosError
from isvos.limits import DEFAULT_SESSION_LIMITS, SessionLimits
from isvos.record import RecordHeader, SessionRecord

from .base import BackendError, SessionHandle, StepOutput, as_backend_error, as_record


@dataclass
class _PendingStep:
    handle: SessionHandle
    frame_index: int
    image: np.ndarray
    masks: dict[int, np.ndarray] | None
    future: asyncio.Future

    def deliver(self, outcome) -> None:
        loop = self.future.get_loop()
        loop.call_soon_threadsafe(_settle, self.future, outcome)


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():  # the caller was cancelled
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class LocalBackend:
    name = "local"
    # Steps of one session run in the order they are sent, so a caller may send the next
    # before the last returns (the engine thread then starts it without waiting on the loop).
    steps_in_flight = 2

    def __init__(
        self,
        engine: Engine,
        limits: SessionLimits = DEFAULT_SESSION_LIMITS,
        *,
        max_pending: int = 64,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.engine = engine
        self.manager = SessionManager(engine, limits)
        self.max_pending = max_pending
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="isvos-engine")
        self._pending: list[_PendingStep] = []
        self._pending_lock = threading.Lock()
        self._scheduled = False
        self._room: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.batch_sizes: dict[int, int] = {}

    @classmethod
    def from_model(
        cls,
        config: str,
        checkpoint: str | None = None,
        device: str = "cpu",
        limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    ) -> LocalBackend:
        from concurrent.futures import ThreadPoolExecutor

        from isvos.engine import EagerRunner
        from isvos.model import build

        # Built on the engine thread: all of the process's torch work on one thread (and one
        # OpenMP thread team), which measured faster than building on another.
        executor = ThreadPoolExecutor(1, thread_name_prefix="isvos-engine")
        model = executor.submit(build, config, checkpoint, device=device).result()
        engine = executor.submit(lambda: Engine(EagerRunner(model))).result()
        return cls(engine, limits, executor=executor)

    # ------------------------------------------------------------------ protocol

    async def open(
        self,
        session_id: str,
        processing_size: tuple[int, int],
        options: dict | None = None,
        *,
        frame_stride: int = 1,
        epoch: int = 0,
    ) -> SessionHandle:
        size = (int(processing_size[0]), int(processing_size[1]))
        await self._run(self.manager.open, session_id, epoch, size, options,
                        frame_stride=frame_stride)  # fmt: skip
        return SessionHandle(session_id, self.name, size, epoch)

    async def prime(
        self,
        session_id: str,
        record: SessionRecord | bytes,
        *,
        epoch: int = 0,
        resume_index: int | None = None,
    ) -> SessionHandle:
        def prime():
            decoded = as_record(record, self.manager.limits)
            return self.manager.prime(session_id, epoch, decoded, resume_index=resume_index)

        live = await self._run(prime)
        return SessionHandle(session_id, self.name, live.session.processing_size, epoch)

    async def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        loop = asyncio.get_running_loop()
        room = self._room.get(loop)
        if room is None:
            room = self._room[loop] = asyncio.Semaphore(self.max_pending)
        async with room:
            item = _PendingStep(handle, frame_index, image, masks, loop.create_future())
            with self._pending_lock:
                self._pending.append(item)
                schedule = not self._scheduled
                self._scheduled = True
            if schedule:
                self._executor.submit(self._run_pending)
            return await item.future

    async def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> RecordHeader:
        def remove():
            with self.manager.use(handle.session_id, handle.epoch) as live:
                live.session.remove_objects(object_ids)
                return live.session.header()

        return await self._run(remove)

    async def record(self, handle: SessionHandle) -> SessionRecord:
        def record():
            with self.manager.use(handle.session_id, handle.epoch) as live:
                return live.session.record()

        return await self._run(record)

    async def close(self, handle: SessionHandle) -> None:
        await self._run(self.manager.close, handle.session_id, handle.epoch)

    async def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return await self._run(self.engine.propose, image)

    async def stats(self) -> dict:
        stats = await self._run(self.manager.stats)
        stats.update(
            model=self.engine.config.name,
            model_hash=self.engine.runner.model_hash,
            device=str(self.engine.runner.device),
            step_batch_sizes={str(k): v for k, v in sorted(self.batch_sizes.items())},
        )
        return stats

    async def ready(self) -> bool:
        return not self._executor._shutdown  # noqa: SLF001 - no public flag

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def shutdown(self) -> None:
        self._executor.submit(self.manager.close_all)
        self._executor.shutdown(wait=True)

    def on_engine_thread(self, function, *args):
        """Run ``function(*args)`` on the engine's thread and wait for it (benchmarks: torch
        on the same thread as the backend's steps, so one OpenMP thread team serves both)."""
        return self._executor.submit(function, *args).result()

    def sweep(self) -> list[tuple[str, int]]:
        """Free idle sessions (the service calls this periodically)."""
        return self.manager.sweep()

    # ------------------------------------------------------------------ engine thread

    async def _run(self, function, *args, **kwargs):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))
        except IsvosError as exc:
            raise as_backend_error(exc) from None
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory on the device
            raise BackendError("internal", f"{type(exc).__name__}: {exc}") from exc

    def _run_pending(self) -> None:
        """On the engine thread: step everything waiting, in rounds where each session
        appears once (a session's steps stay in order)."""
        while True:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._scheduled = False
                    return
            while batch:
                seen: set[str] = set()
                round_, rest = [], []
                for item in batch:
                    key = item.handle.session_id
                    (rest if key in seen else round_).append(item)
                    seen.add(key)
                self._step_round(round_)
                batch = rest

    def _step_round(self, items: list[_PendingStep]) -> None:
        with ExitStack() as stack:
            ready, steps, replayed = [], [], []
            for item in items:
                try:
                    live = stack.enter_context(
                        self.manager.use(item.handle.session_id, item.handle.epoch)
                    )
                except Exception as exc:  # noqa: BLE001 - reported to its caller
                    item.deliver(as_backend_error(exc))
                    continue
                ready.append((item, live))
                steps.append((live.session, item.frame_index, item.image, item.masks))
                replayed.append(live.session.replayed(item.frame_index))
            if not steps:
                return
            self.batch_sizes[len(steps)] = self.batch_sizes.get(len(steps), 0) + 1
            try:
                results = self.engine.step_many(steps)
            except BaseException as exc:  # noqa: BLE001 - a failure of the whole batch
                results = [exc] * len(steps)
            for (item, live), result, again in zip(ready, results, replayed, strict=True):
                if isinstance(result, BaseException):
                    item.deliver(as_backend_error(result))
                    continue
                header = live.session.header() if result.memorised else None
                item.deliver(
                    StepOutput(
                        result.frame_index,
                        result.object_ids,
                        result.probabilities,
                        result.labels,
                        result.memorised,
                        again,
                        header,
                    )  # fmt: skip
                )
