"""The backend interface the service talks to (DESIGN "one engine, two hosts"). Torch-free.

Async first: ``open``, ``prime``, ``step``, ``remove_objects``, ``record``, ``close``,
``stats``, ``ready``. Implementations: ``local`` (the engine in-process, on an executor
thread) and ``triton`` (the engine inside Triton's python backend, sessions keyed by
correlation id). ``SyncBackend`` (``service.backends.sync``) gives blocking calls for code
that is not async.

Frames and masks cross it at processing size (``isvos.processing`` resizes on the caller's
side), so messages stay small and the caller needs no torch. Steps carry the video's frame
index; a repeat of a recent index returns the cached result, anything else out of order is
``frame_gap``. A handle names the endpoint and the epoch of its session; a session re-primed
elsewhere gets the next epoch (DESIGN decision 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from isvos.errors import IsvosError
from isvos.record import RecordHeader, SessionRecord


class BackendError(IsvosError):
    """A refused or failed backend call; ``code`` is a row of ``isvos.errors.ERRORS``."""


def as_backend_error(exc: BaseException) -> BackendError:
    """Any exception as a coded ``BackendError`` (unknown ones are ``internal``)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, IsvosError):
        return BackendError(exc.code, exc.message)
    return BackendError("internal", f"{type(exc).__name__}: {exc}")


@dataclass
class SessionHandle:
    session_id: str
    endpoint: str
    processing_size: tuple[int, int]
    epoch: int = 0


@dataclass
class StepOutput:
    frame_index: int
    object_ids: list[int]
    probabilities: np.ndarray  # [1 + O, h, w] float32 at processing size, background first
    labels: np.ndarray  # [h, w] uint8 ids at processing size
    memorised: bool = False  # the frame became a memory slot (its payload: input + labels)
    replayed: bool = False  # a cached answer to a repeated index
    # The record header after this step, when the step changed it (memorised frames).
    header: RecordHeader | None = None


class Backend(Protocol):
    name: str

    async def open(
        self,
        session_id: str,
        processing_size: tuple[int, int],
        options: dict | None = None,
        *,
        frame_stride: int = 1,
        epoch: int = 0,
    ) -> SessionHandle: ...

    async def prime(
        self,
        session_id: str,
        record: SessionRecord | bytes,
        *,
        epoch: int = 0,
        resume_index: int | None = None,
    ) -> SessionHandle: ...

    async def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput: ...

    async def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> RecordHeader:
        """Forget objects; returns the record header after the removal."""
        ...

    async def record(self, handle: SessionHandle) -> SessionRecord: ...

    async def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Instance proposals of one RGB frame at processing size (``Engine.propose``):
        object probability float32 [N], mask probabilities float16 [N, h/4, w/4]."""
        ...

    async def close(self, handle: SessionHandle) -> None: ...

    async def stats(self) -> dict: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None:
        """Release the backend's own resources (threads, channels)."""
        ...


def as_record(record: SessionRecord | bytes, limits=None) -> SessionRecord:
    """A decoded, validated record (``invalid_record`` when the bytes are not one)."""
    if isinstance(record, SessionRecord):
        return record
    from isvos.limits import DEFAULT_SESSION_LIMITS

    try:
        return SessionRecord.from_bytes(bytes(record), limits or DEFAULT_SESSION_LIMITS)
    except IsvosError as exc:
        raise as_backend_error(exc) from None


def watch_placements(backend, record: Callable[[str, str], Awaitable[None]], log=None) -> None:
    """Run ``record(session id, endpoint)`` as a task whenever ``backend`` places a session
    on a server (backends with several servers: Triton); a failed write is logged."""
    if not hasattr(backend, "on_place"):
        return
    tasks: set[asyncio.Future] = set()

    async def guarded(session_id: str, endpoint: str) -> None:
        try:
            await record(session_id, endpoint)
        except Exception:  # noqa: BLE001 - where a session lives is informative only
            if log is not None:
                log.warning("could not record where session %s lives", session_id, exc_info=True)

    def placed(session_id: str, endpoint: str) -> None:
        task = asyncio.ensure_future(guarded(session_id, endpoint))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    backend.on_place = placed
