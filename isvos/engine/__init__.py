"""The session engine over the ISVOS compute (eager modules or TorchScript graphs)."""

from isvos.record import RecordHeader, SessionRecord, SlotInfo, SlotPayload

from .errors import (
    AdmissionError,
    EngineError,
    FrameIndexError,
    ObjectError,
    RecordMismatchError,
    SessionLookupError,
    SessionStateError,
)
from .manager import LiveSession, SessionManager
from .memory_bank import MemoryBank, bank_bytes
from .runner import EagerRunner, ScriptedRunner
from .session import Engine, Session, StepResult

__all__ = [
    "AdmissionError", "EagerRunner", "Engine", "EngineError", "FrameIndexError", "LiveSession",
    "MemoryBank", "ObjectError", "RecordHeader", "RecordMismatchError", "ScriptedRunner",
    "Session", "SessionLookupError", "SessionManager", "SessionRecord", "SessionStateError",
    "SlotInfo", "SlotPayload", "StepResult", "bank_bytes",
]  # fmt: skip
