"""The embedded backend: the ISVOS engine in this process (DESIGN decision 9)."""

from __future__ import annotations

import numpy as np

from isvos.config import MemoryOptions, ProcessingOptions
from isvos.engine import EagerRunner, Engine, EngineError, Session
from isvos.processing import MIN_PROCESSING_SIDE

from .base import BackendError, SessionHandle, StepOutput, open_session_of, refuse_open_id


class LocalBackend:
    name = "local"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: dict[str, Session] = {}

    @classmethod
    def from_model(
        cls, config: str, checkpoint: str | None = None, device: str = "cpu"
    ) -> LocalBackend:
        from isvos.model import build

        model = build(config, checkpoint, device=device)
        return cls(Engine(EagerRunner(model)))

    def open(
        self, session_id: str, processing_size: tuple[int, int], options: dict | None = None
    ) -> SessionHandle:
        refuse_open_id(self.sessions, session_id)
        limit = ProcessingOptions().max_long_side
        if max(processing_size) > limit or min(processing_size) < MIN_PROCESSING_SIDE:
            raise BackendError(
                "resource_exhausted",
                f"processing size {processing_size[1]}x{processing_size[0]} is outside "
                f"{MIN_PROCESSING_SIDE}..{limit} pixels per side; choose a smaller --size",
            )
        try:
            memory = MemoryOptions.from_dict(options or {})
        except (TypeError, ValueError) as exc:
            raise BackendError("invalid_argument", str(exc)) from exc
        self.sessions[session_id] = self.engine.open_session(processing_size, memory)
        return SessionHandle(session_id, "local", tuple(processing_size))

    def _session(self, handle: SessionHandle) -> Session:
        return open_session_of(self.sessions, handle)

    def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        try:
            result = self._session(handle).step(frame_index, image, masks)
        except EngineError as exc:
            raise BackendError(exc.code, str(exc)) from exc
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory on the device
            raise BackendError("internal", f"step failed: {exc}") from exc
        return StepOutput(
            result.frame_index, result.object_ids, result.probabilities, result.labels
        )

    def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> None:
        try:
            self._session(handle).remove_objects(object_ids)
        except EngineError as exc:
            raise BackendError(exc.code, str(exc)) from exc

    def record(self, handle: SessionHandle) -> bytes:
        return self._session(handle).record().to_bytes()

    def close(self, handle: SessionHandle) -> None:
        session = self.sessions.pop(handle.session_id, None)
        if session is not None:
            session.close()
