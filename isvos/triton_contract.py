"""The wire contract of the Triton model ``isvos`` (torch-free; docs/triton.md).

Imported by both sides: the python-backend adapter (``model_repo/isvos/1/model.py``) and the
client (``service.backends.triton``). Every tensor name, request kind and model parameter
lives here, once; error codes are those of ``isvos.errors``.

One model, one request per call, every request part of a sequence whose correlation id is
the string ``"<session id>:<epoch>"`` (``correlation_id``). ``max_batch_size`` > 0, so every
tensor carries a leading batch dimension of 1 on the wire.
"""

from __future__ import annotations

import json
import re

import numpy as np

from isvos.errors import parse_wire_error, wire_error
from isvos.limits import DEFAULT_SESSION_LIMITS

MODEL_NAME = "isvos"

# ------------------------------------------------------------------ inputs
KIND = "KIND"  # BYTES [1]: one of REQUEST_KINDS
FRAME_INDEX = "FRAME_INDEX"  # INT64 [1]: step: the video frame index; prime: frame to resume at
IMAGE = "IMAGE"  # UINT8 [h, w, 3]: RGB frame at processing size
MASKS = "MASKS"  # UINT8 [h, w]: label map of new / corrected objects at processing size
OBJECT_IDS = "OBJECT_IDS"  # INT32 [n]: remove: ids to remove; step/open: ids MASKS carries
OPTIONS = "OPTIONS"  # BYTES [1]: JSON, MemoryOptions fields plus SESSION_OPTIONS
PROCESSING_SIZE = "PROCESSING_SIZE"  # INT32 [2]: (h, w) for an open without IMAGE
RECORD = "RECORD"  # BYTES [1]: a full session record (isvos.record) for prime

INPUTS = (KIND, FRAME_INDEX, IMAGE, MASKS, OBJECT_IDS, OPTIONS, PROCESSING_SIZE, RECORD)

# ------------------------------------------------------------------ outputs
PROBABILITIES = "PROBABILITIES"  # FP16 [1 + O, h, w], background first
LABELS = "LABELS"  # UINT8 [h, w] object ids at processing size
OBJECTS = "OBJECTS"  # INT32 [O] object ids, in channel order
INFO = "INFO"  # BYTES [1]: JSON (frame_index, memorised, replayed, ...; stats)
RECORD_OUT = "RECORD_OUT"  # BYTES [1]: record kind: the full record; else the record header

OUTPUTS = (PROBABILITIES, LABELS, OBJECTS, INFO, RECORD_OUT)

# ------------------------------------------------------------------ request kinds
OPEN = "open"  # START; PROCESSING_SIZE or IMAGE (+ MASKS [+ FRAME_INDEX]: first step too)
STEP = "step"  # FRAME_INDEX + IMAGE [+ MASKS [+ OBJECT_IDS]]
PRIME = "prime"  # START; RECORD [+ FRAME_INDEX] [+ OPTIONS]: restore without predicting
REMOVE = "remove"  # OBJECT_IDS
RECORD_KIND = "record"  # operator-only: the full record in RECORD_OUT
CLOSE = "close"  # END; idempotent
STATS = "stats"  # operator-only: the instance's sessions, bytes, batches (any sequence)
# IMAGE at processing size -> PROBABILITIES [N, h/4, w/4] (the queries' mask probabilities)
# and INFO {"objectness": [N floats]}; a one-request sequence, no session (isvos.proposals).
PROPOSE = "propose"

REQUEST_KINDS = (OPEN, STEP, PRIME, REMOVE, RECORD_KIND, CLOSE, STATS, PROPOSE)

# ------------------------------------------------------------------ session options
# OPTIONS keys beside the MemoryOptions fields:
# attach the record header to every response that changes it (memorised steps, removals,
# prime): the client keeps the pixels itself and assembles the full record when needed.
ATTACH_RECORD = "attach_record"  # "" or "header"
# Frames between two steps of the session (the video's stride): steps carry video indices.
FRAME_STRIDE = "frame_stride"

SESSION_OPTIONS = (ATTACH_RECORD, FRAME_STRIDE)

# ------------------------------------------------------------------ model parameters
# config.pbtxt ``parameters`` (string values), read by the model at initialisation.
P_MEMORY_BUDGET = "memory_budget_bytes"  # bytes per instance, or "auto"
P_SESSION_TTL = "session_ttl_seconds"  # idle sessions are freed after this
P_MAX_SESSIONS = "max_sessions"  # live sessions per instance (<= max_candidate_sequences)
P_MAX_OBJECTS = "max_objects"  # most objects a session may reserve (MemoryOptions.max_objects)
P_MAX_SIDE = "max_processing_side"  # longest accepted processing side, pixels
P_MAX_MEMORY_FRAMES = "max_memory_frames"  # largest memory capacity a session may ask for
P_MAX_RECORD_BYTES = "max_record_bytes"  # largest decoded record a prime may carry
P_TORCH_THREADS = "torch_threads"  # intra-op threads; 0 leaves torch's default
P_MEMORY_DTYPE = "memory_dtype"  # "auto" (fp16 on GPU), "float32" or "float16"
# While this file exists the server is draining: opens and primes are refused with
# ``unavailable`` (clients place the session elsewhere), live sessions go on.
P_DRAIN_FILE = "drain_file"
DEFAULT_DRAIN_FILE = "/tmp/isvos-triton-drain"

_L = DEFAULT_SESSION_LIMITS
PARAMETER_DEFAULTS = {
    P_MEMORY_BUDGET: "auto",
    P_SESSION_TTL: str(int(_L.ttl_s)),
    P_MAX_SESSIONS: str(_L.max_sessions),
    P_MAX_OBJECTS: str(_L.max_objects),
    P_MAX_SIDE: str(_L.max_processing_side),
    P_MAX_MEMORY_FRAMES: str(_L.max_memory_frames),
    P_MAX_RECORD_BYTES: str(_L.max_record_bytes),
    P_TORCH_THREADS: "0",
    P_MEMORY_DTYPE: "auto",
    P_DRAIN_FILE: DEFAULT_DRAIN_FILE,
}

# Triton's own refusal of a sequence it does not know (restart, idle expiry).
_NO_SEQUENCE_RE = re.compile(r"must specify the START flag|sequence .* not (?:found|active)")


def correlation_id(session_id: str, epoch: int) -> str:
    return f"{session_id}:{epoch}"


def split_correlation_id(corr: str) -> tuple[str, int]:
    """(session id, epoch) of ``"<session id>:<epoch>"``; ValueError when malformed."""
    session_id, sep, epoch = corr.rpartition(":")
    if not sep or not session_id or not epoch.isdigit():
        raise ValueError(f"correlation id {corr!r} is not '<session id>:<epoch>'")
    return session_id, int(epoch)


error_string = wire_error


def parse_error(text: str) -> tuple[str, str]:
    """(code, message) from an error string of the model or of Triton itself."""
    parsed = parse_wire_error(text)
    if parsed is not None:
        return parsed
    if _NO_SEQUENCE_RE.search(text):
        return "not_found", text.strip()
    return "internal", text.strip()


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
