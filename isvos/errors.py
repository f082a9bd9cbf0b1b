"""The one error table of the project (DESIGN decision 11). Torch-free.

Every error that leaves a component (media, engine, backends, Triton model, jobs, streams)
carries one of these codes. The table says what each code means, the HTTP status and gRPC
status it travels as, and whether repeating the same request can succeed. Clients decide
retries from the table (``ERRORS[code].retryable``), never from message text.

``IsvosError`` is the base class of every coded exception; ``MediaError``, ``EngineError``
and ``BackendError`` are its subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    meaning: str
    http_status: int
    grpc_status: str  # a grpc.StatusCode name
    retryable: bool  # the same request may succeed later (after a wait or a re-prime)


def _table(*rows: tuple[str, str, int, str, bool]) -> dict[str, ErrorCode]:
    return {row[0]: ErrorCode(*row) for row in rows}


ERRORS: dict[str, ErrorCode] = _table(
    # ------------------------------------------------------------ requests in general
    ("invalid_argument", "the request is malformed (fields, shapes, types, options)",
     400, "INVALID_ARGUMENT", False),
    ("not_found", "no such session, job, upload or resource (or not yours)",
     404, "NOT_FOUND", False),
    ("already_exists", "the id is already in use by a live session or resource",
     409, "ALREADY_EXISTS", False),
    ("failed_precondition", "the operation is not allowed in the current state",
     409, "FAILED_PRECONDITION", False),
    ("cancelled", "the work was cancelled by its owner", 409, "CANCELLED", False),
    ("deadline_exceeded", "the call did not finish within its deadline",
     504, "DEADLINE_EXCEEDED", True),
    ("request_timeout", "the request body stopped arriving", 408, "DEADLINE_EXCEEDED", True),
    ("unauthenticated", "no valid API key was given", 401, "UNAUTHENTICATED", False),
    ("rate_limited", "a per-key limit on concurrent or queued work is reached",
     429, "RESOURCE_EXHAUSTED", True),
    ("payload_too_large", "the request body or message exceeds its size limit",
     413, "RESOURCE_EXHAUSTED", False),
    # ------------------------------------------------------------ sessions (engine, backends)
    ("frame_gap", "a step index is neither a recently answered one nor the next one",
     409, "FAILED_PRECONDITION", False),
    ("invalid_objects", "unknown, removed, empty, out-of-range or too many objects",
     400, "INVALID_ARGUMENT", False),
    ("invalid_record", "a session record is malformed, inconsistent or too large",
     400, "INVALID_ARGUMENT", False),
    ("record_mismatch", "a session record was made with another checkpoint or config",
     400, "INVALID_ARGUMENT", False),
    ("stale_epoch", "the request names an older epoch of a session that has moved on",
     409, "ABORTED", False),
    ("resource_exhausted", "admission refused: memory budget, sessions, size or objects",
     503, "RESOURCE_EXHAUSTED", True),
    ("unavailable", "the inference server or store cannot be reached, or is draining",
     503, "UNAVAILABLE", True),
    ("internal", "an unexpected failure (a bug); the message says where", 500, "INTERNAL", False),
    # ------------------------------------------------------------ media (user input)
    ("video_unreadable", "the video file cannot be opened or decoded", 422, "INVALID_ARGUMENT",
     False),
    ("video_too_large", "the file is larger than the configured size limit",
     413, "INVALID_ARGUMENT", False),
    ("dimensions_too_large", "the frame size exceeds the configured limits",
     422, "INVALID_ARGUMENT", False),
    ("too_many_frames", "the video has more frames than allowed", 422, "INVALID_ARGUMENT", False),
    ("too_long", "the video is longer than allowed", 422, "INVALID_ARGUMENT", False),
    ("frame_range", "the requested frame range is outside the video", 422, "INVALID_ARGUMENT",
     False),
    ("unknown_format", "the file type is not supported", 415, "INVALID_ARGUMENT", False),
    ("invalid_size", "the processing size is outside the accepted range", 400,
     "INVALID_ARGUMENT", False),
    ("mask_unreadable", "the mask file cannot be read", 422, "INVALID_ARGUMENT", False),
    ("image_unreadable", "the image file cannot be read", 422, "INVALID_ARGUMENT", False),
    ("mask_size_mismatch", "the mask size differs from the video size", 422,
     "INVALID_ARGUMENT", False),
    ("mask_empty", "a mask contains no object pixels", 422, "INVALID_ARGUMENT", False),
    ("too_many_objects", "more objects than allowed", 422, "INVALID_ARGUMENT", False),
    ("bad_object_id", "an object id is outside 1..255", 422, "INVALID_ARGUMENT", False),
)  # fmt: skip


def error_info(code: str) -> ErrorCode:
    """The table's row for ``code`` (``internal`` for a code the table does not hold)."""
    return ERRORS.get(code, ERRORS["internal"])


class IsvosError(Exception):
    """An error with a stable ``code`` from ``ERRORS`` and a message for humans that says
    what is wrong and what to do about it."""

    code: str = "internal"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        code = code or type(self).code
        if code not in ERRORS:
            raise ValueError(f"error code {code!r} is not in isvos.errors.ERRORS")
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    @property
    def info(self) -> ErrorCode:
        return ERRORS[self.code]

    @property
    def retryable(self) -> bool:
        return ERRORS[self.code].retryable

    def to_dict(self) -> dict[str, str]:
        """The JSON body of an HTTP error (``{code, message}``)."""
        return {"code": self.code, "message": self.message}


def wire_error(code: str, message: str) -> str:
    """An error as one string, ``"<code>: <message>"`` (the Triton model's error text)."""
    return f"{code}: {message}"


def parse_wire_error(text: str) -> tuple[str, str] | None:
    """(code, message) of a string made by ``wire_error`` (possibly with a prefix added by a
    transport), or None when it holds no known code."""
    best = None
    for code in ERRORS:
        marker = f"{code}: "
        at = text.find(marker)
        while at > 0 and text[at - 1] not in " :]\n\t":  # a code must start a word
            at = text.find(marker, at + 1)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, code)
    if best is None:
        return None
    at, code = best
    return code, text[at + len(code) + 2 :].strip()
