"""Blocking calls over an async backend, for code that is not async (tests, notebooks).

The backend lives on an event loop of its own, on a daemon thread; each call is submitted
to it and waited for. Attributes other than the protocol's calls (``counters``,
``sessions``, ...) are read from the backend itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np

from isvos.record import RecordHeader, SessionRecord

from .base import Backend, SessionHandle, StepOutput


class SyncBackend:
    def __init__(self, factory: Callable[[], Backend], *, timeout_s: float | None = None) -> None:
        """``factory`` builds the backend on the loop's thread (asyncio clients bind to it)."""
        self.timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="isvos-backend",
                                        daemon=True)  # fmt: skip
        self._thread.start()

        async def build():
            return factory()

        self.backend = self._call(build())
        self.name = self.backend.name

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self.timeout_s)

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def open(
        self,
        session_id: str,
        processing_size: tuple[int, int],
        options: dict | None = None,
        *,
        frame_stride: int = 1,
        epoch: int = 0,
    ) -> SessionHandle:
        return self._call(self.backend.open(session_id, processing_size, options,
                                            frame_stride=frame_stride, epoch=epoch))  # fmt: skip

    def prime(
        self,
        session_id: str,
        record: SessionRecord | bytes,
        *,
        epoch: int = 0,
        resume_index: int | None = None,
    ) -> SessionHandle:
        return self._call(self.backend.prime(session_id, record, epoch=epoch,
                                             resume_index=resume_index))  # fmt: skip

    def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        return self._call(self.backend.step(handle, frame_index, image, masks))

    def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> RecordHeader:
        return self._call(self.backend.remove_objects(handle, object_ids))

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._call(self.backend.propose(image))

    def record(self, handle: SessionHandle) -> SessionRecord:
        return self._call(self.backend.record(handle))

    def close(self, handle: SessionHandle) -> None:
        self._call(self.backend.close(handle))

    def stats(self, *args) -> dict:
        return self._call(self.backend.stats(*args))

    def ready(self) -> bool:
        return self._call(self.backend.ready())

    def run(self, coroutine_function, *args, **kwargs):
        """Run ``coroutine_function(backend, *args, **kwargs)`` on the backend's loop."""
        return self._call(coroutine_function(self.backend, *args, **kwargs))

    def shutdown(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.backend.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> SyncBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
