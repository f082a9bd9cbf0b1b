"""The wire contract of the Triton model ``isvos`` (torch-free; docs/triton.md).

Imported by both sides: the python-backend adapter (``model_repo/isvos/1/model.py``) and the
client (``service.backends.triton``). Every tensor name, request kind, error code and model
parameter lives here, once.

One model, one request per call, every request part of a sequence whose correlation id is
the string ``"<session id>:<epoch>"`` (``correlation_id``). ``max_batch_size`` > 0, so every
tensor carries a leading batch dimension of 1 on the wire.
"""

from __future__ import annotations

import json
import re

import numpy as np

MODEL_NAME = "isvos"

# ------------------------------------------------------------------ inputs
KIND = "KIND"  # BYTES [1]: one of REQUEST_KINDS
FRAME_INDEX = "FRAME_INDEX"  # INT64 [1]: step index; prime: the next frame to expect
IMAGE = "IMAGE"  # UINT8 [h, w, 3]: RGB frame at processing size
MASKS = "MASKS"  # UINT8 [h, w]: label map of new / corrected objects at processing size
OBJECT_IDS = "OBJECT_IDS"  # INT32 [n]: remove: ids to remove; step/open: ids MASKS carries
OPTIONS = "OPTIONS"  # BYTES [1]: JSON, MemoryOptions fields plus ATTACH_RECORD
PROCESSING_SIZE = "PROCESSING_SIZE"  # INT32 [2]: (h, w) for an open without IMAGE
RECORD = "RECORD"  # BYTES [1]: a session record (isvos.engine.record) for prime

INPUTS = (KIND, FRAME_INDEX, IMAGE, MASKS, OBJECT_IDS, OPTIONS, PROCESSING_SIZE, RECORD)

# ------------------------------------------------------------------ outputs
PROBABILITIES = "PROBABILITIES"  # FP16 [1 + O, h, w], background first
LABELS = "LABELS"  # UINT8 [h, w] object ids at processing size
OBJECTS = "OBJECTS"  # INT32 [O] object ids, in channel order
INFO = "INFO"  # BYTES [1]: JSON (frame_index, memorised, replayed, ...; stats)
RECORD_OUT = "RECORD_OUT"  # BYTES [1]: the session record (record kind, or attached)

OUTPUTS = (PROBABILITIES, LABELS, OBJECTS, INFO, RECORD_OUT)

# ------------------------------------------------------------------ request kinds
OPEN = "open"  # START; PROCESSING_SIZE or IMAGE (+ MASKS [+ FRAME_INDEX]: first step too)
STEP = "step"  # FRAME_INDEX + IMAGE [+ MASKS [+ OBJECT_IDS]]
PRIME = "prime"  # START; RECORD [+ FRAME_INDEX] [+ OPTIONS]: restore without predicting
REMOVE = "remove"  # OBJECT_IDS
RECORD_KIND = "record"  # the session record in RECORD_OUT
CLOSE = "close"  # END; idempotent
STATS = "stats"  # INFO: the instance's sessions, bytes, evictions, batches (any sequence)

REQUEST_KINDS = (OPEN, STEP, PRIME, REMOVE, RECORD_KIND, CLOSE, STATS)

# OPTIONS key (not a memory option): attach RECORD_OUT to every response that changes the
# session's record (memorised steps, removals, prime), saving a round trip per record.
ATTACH_RECORD = "attach_record"

# ------------------------------------------------------------------ errors
# Errors travel as "<code>: <message>" in the Triton error string.
UNKNOWN_SESSION = "unknown_session"  # no such session on this instance (TTL, restart, pod)
RESOURCE_EXHAUSTED = "resource_exhausted"  # admission refused: budget, objects, size, sessions
INVALID_ARGUMENT = "invalid_argument"  # malformed request (kind, shapes, dtypes, options)
FAILED_PRECONDITION = "failed_precondition"  # not allowed in the session's state
FRAME_GAP = "frame_gap"  # step index neither the last one nor the next one
INVALID_OBJECTS = "invalid_objects"  # unknown / removed / empty / too many objects
RECORD_MISMATCH = "record_mismatch"  # record of another checkpoint, config or format
INTERNAL = "internal"  # unexpected failure inside the model (a bug)
UNAVAILABLE = "unavailable"  # client side: the server cannot be reached

ERROR_CODES = (
    UNKNOWN_SESSION, RESOURCE_EXHAUSTED, INVALID_ARGUMENT, FAILED_PRECONDITION, FRAME_GAP,
    INVALID_OBJECTS, RECORD_MISMATCH, INTERNAL, UNAVAILABLE,
)  # fmt: skip

# ------------------------------------------------------------------ model parameters
# config.pbtxt ``parameters`` (string values), read by the model at initialisation.
P_MEMORY_BUDGET = "memory_budget_bytes"  # bytes per instance, or "auto"
P_SESSION_TTL = "session_ttl_seconds"  # idle sessions are freed after this
P_MAX_SESSIONS = "max_sessions"  # live sessions per instance (<= max_candidate_sequences)
P_MAX_OBJECTS = "max_objects"  # most objects a session may reserve (MemoryOptions.max_objects)
P_MAX_SIDE = "max_processing_side"  # longest accepted processing side, pixels
P_TORCH_THREADS = "torch_threads"  # intra-op threads; 0 leaves torch's default
P_MEMORY_DTYPE = "memory_dtype"  # "auto" (fp16 on GPU), "float32" or "float16"

PARAMETER_DEFAULTS = {
    P_MEMORY_BUDGET: "auto",
    P_SESSION_TTL: "300",
    P_MAX_SESSIONS: "64",
    P_MAX_OBJECTS: "32",
    P_MAX_SIDE: "1920",
    P_TORCH_THREADS: "0",
    P_MEMORY_DTYPE: "auto",
}

_ERROR_RE = re.compile(r"(?:^|[\s\]:])(" + "|".join(ERROR_CODES) + r"): (.*)", re.DOTALL)
# Triton's own refusal of a sequence it does not know (restart, idle expiry).
_NO_SEQUENCE_RE = re.compile(r"must specify the START flag|sequence .* not (?:found|active)")


def correlation_id(session_id: str, epoch: int) -> str:
    return f"{session_id}:{epoch}"


def error_string(code: str, message: str) -> str:
    return f"{code}: {message}"


def parse_error(text: str) -> tuple[str, str]:
    """(code, message) from an error string of the model or of Triton itself."""
    match = _ERROR_RE.search(text)
    if match:
        return match.group(1), match.group(2).strip()
    if _NO_SEQUENCE_RE.search(text):
        return UNKNOWN_SESSION, text.strip()
    return INTERNAL, text.strip()


def dumps(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def to_float16(values: np.ndarray) -> np.ndarray:
    """``values.astype(np.float16)``, bit for bit, without numpy's slow path for results in
    fp16's subnormal range (30x slower; probabilities far from an object live there)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    small = np.abs(values) < 2.0**-14  # below fp16's smallest normal
    if not small.any():
        return values.astype(np.float16)
    out = np.where(small, np.float32(0), values).astype(np.float16)
    tiny = values[small]
    # Subnormal halves are multiples of 2**-24: their bits are the rounded multiple (half to
    # even, like numpy's conversion); 1024 is the smallest normal's bit pattern.
    bits = np.rint(np.abs(tiny) * np.float32(2.0**24)).astype(np.uint16)
    bits |= np.signbit(tiny).astype(np.uint16) << 15
    out.view(np.uint16)[small] = bits
    return out
