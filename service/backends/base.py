"""The backend interface the service talks to: open, step, remove objects, record, close.

Frames and masks cross it at processing size (``isvos.processing`` does the resizing on the
caller's side), so messages stay small and the caller needs no torch. Implementations:
``local`` (the engine in-process) and ``triton`` (the engine inside Triton's python
backend, sessions keyed by correlation id). A handle names the endpoint its session lives
on, so several inference servers can be used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np


class BackendError(RuntimeError):
    """A refused or failed backend call, with a stable ``code`` (the engine's codes in
    ``isvos.engine.errors``, the Triton contract's in ``service.triton_contract``, and
    ``already_exists`` / ``not_found`` for session ids)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_S = TypeVar("_S")


def open_session_of(sessions: Mapping[str, _S], handle: SessionHandle) -> _S:
    """The open session behind ``handle``, or ``not_found``."""
    try:
        return sessions[handle.session_id]
    except KeyError:
        raise BackendError("not_found", f"session {handle.session_id} is not open") from None


def refuse_open_id(sessions: Mapping[str, object], session_id: str) -> None:
    """``already_exists`` when ``session_id`` names an open session."""
    if session_id in sessions:
        raise BackendError("already_exists", f"session {session_id} is already open")


@dataclass
class SessionHandle:
    session_id: str
    endpoint: str
    processing_size: tuple[int, int]
    epoch: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class StepOutput:
    frame_index: int
    object_ids: list[int]
    probabilities: np.ndarray  # [1 + O, h, w] at processing size, background first
    labels: np.ndarray  # [h, w] uint8 ids at processing size


class Backend(Protocol):
    name: str

    def open(
        self, session_id: str, processing_size: tuple[int, int], options: dict | None = None
    ) -> SessionHandle: ...

    def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput: ...

    def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> None: ...

    def record(self, handle: SessionHandle) -> bytes: ...

    def close(self, handle: SessionHandle) -> None: ...
