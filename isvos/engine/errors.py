"""Engine errors. Each carries a stable ``code`` that backends put on the wire."""

from __future__ import annotations


class EngineError(ValueError):
    code = "invalid_argument"


class FrameIndexError(EngineError):
    """A step whose index is neither the last one (replayed) nor the next one."""

    code = "frame_gap"


class ObjectError(EngineError):
    """Unknown, duplicate or too many objects, or an empty mask."""

    code = "invalid_objects"


class RecordMismatchError(EngineError):
    """A session record made with another checkpoint, config or format."""

    code = "record_mismatch"


class SessionStateError(EngineError):
    """An operation that the session's state does not allow (e.g. a step before masks)."""

    code = "failed_precondition"
