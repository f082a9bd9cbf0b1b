"""Engine errors: ``IsvosError`` subclasses whose codes are rows of ``isvos.errors.ERRORS``."""

from __future__ import annotations

from isvos.errors import IsvosError


class EngineError(IsvosError, ValueError):
    code = "invalid_argument"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(code or type(self).code, message)


class FrameIndexError(EngineError):
    """A step whose index is neither a recently answered one (replayed) nor the next one."""

    code = "frame_gap"


class ObjectError(EngineError):
    """Unknown, duplicate, removed, out-of-range or too many objects, or an empty mask."""

    code = "invalid_objects"


class RecordMismatchError(EngineError):
    """A session record made with another checkpoint or config."""

    code = "record_mismatch"


class SessionStateError(EngineError):
    """An operation that the session's state does not allow (e.g. a step before masks)."""

    code = "failed_precondition"


class AdmissionError(EngineError):
    """A session the host cannot admit: budget, live sessions, size or objects."""

    code = "resource_exhausted"


class SessionLookupError(EngineError):
    """No live session of that id (``not_found``) or an older epoch of it (``stale_epoch``)."""

    code = "not_found"
