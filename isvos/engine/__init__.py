"""The session engine over the ISVOS compute (eager modules or TorchScript graphs)."""

from .errors import (
    EngineError,
    FrameIndexError,
    ObjectError,
    RecordMismatchError,
    SessionStateError,
)
from .memory_bank import MemoryBank, bank_bytes
from .record import SessionRecord
from .runner import EagerRunner, ScriptedRunner
from .session import Engine, Session, StepResult

__all__ = [
    "EagerRunner", "Engine", "EngineError", "FrameIndexError", "MemoryBank", "ObjectError",
    "RecordMismatchError", "ScriptedRunner", "Session", "SessionRecord", "SessionStateError",
    "StepResult", "bank_bytes",
]  # fmt: skip
