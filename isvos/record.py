"""Session records: the small, exact description of a session (DESIGN decision 3). Torch-free.

The memory bank is derived state. A record holds a JSON **header** (config and weights
identity, options, processing size, counters, objects, pins and one entry per memory slot)
and, per slot, a **payload**: the frame at processing size and its processing-size label
map (the hard masks its values were encoded from). A session primed from a record continues
with identical outputs on the same device, dtype and thread count.

Records come from other processes (clients, Redis, a blob store) and are untrusted: every
decoder here validates the header first, derives the exact size of every array from it,
refuses a record whose decoded size exceeds the host's limit, and decompresses each array
with a bound, so nothing is allocated from a hostile record. Errors are ``invalid_record``.

Wire formats (little-endian):

- header: UTF-8 JSON (``RecordHeader.to_json``);
- slot payload (``encode_slot``): ``ISVOSSLT`` u16 version, i64 frame index, u32 height,
  u32 width, then the zlib-compressed image and label map, each preceded by its u32 length;
- full record (``SessionRecord.to_bytes``): ``ISVOSREC`` u16 version, u32 header length,
  the header, then the slot payloads in header order, each preceded by its u32 length.

A caller persisting a session incrementally keeps the header (small, rewritten as it
changes) and each slot payload once (written when the slot is memorised, deleted when it
leaves the header).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from isvos.config import MemoryOptions
from isvos.errors import IsvosError
from isvos.limits import DEFAULT_SESSION_LIMITS, MAX_OBJECT_ID, MIN_PROCESSING_SIDE, SessionLimits

RECORD_FORMAT = "isvos-session-record"
RECORD_VERSION = 2
_RECORD_MAGIC = b"ISVOSREC"
_SLOT_MAGIC = b"ISVOSSLT"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SLOT_HEAD = struct.Struct("<HqII")  # version, frame index, height, width
_ZLIB_LEVEL = 1  # label maps shrink 50-100x at level 1; frames barely gain from more
_MAX_INT = 2**53  # counters and frame indices (JSON-safe); anything larger is not a record


class RecordError(IsvosError):
    """A malformed, inconsistent or oversized record (``invalid_record``)."""

    code = "invalid_record"


def _bad(message: str) -> RecordError:
    return RecordError("invalid_record", message)


@dataclass(frozen=True)
class SlotInfo:
    """One memory slot as the header lists it."""

    frame_index: int
    # Objects whose values were encoded in the slot, in encoding order (removed ones too).
    encoded_objects: tuple[int, ...]
    # The session's first memorised frame (never evicted).
    first: bool


@dataclass
class SlotPayload:
    """The pixels of one slot at processing size."""

    frame_index: int
    image: np.ndarray  # [h, w, 3] uint8
    labels: np.ndarray  # [h, w] uint8 object ids


@dataclass
class RecordHeader:
    config_name: str
    architecture_hash: str
    model_hash: str
    options: dict  # MemoryOptions fields
    processing_size: tuple[int, int]
    frame_stride: int
    next_frame_index: int | None  # None: no step yet (the first step may have any index)
    last_memorised_index: int
    object_ids: list[int]
    object_start_frames: dict[int, int]
    anchors: dict[int, int]  # object id -> frame index of its pinned slot
    removed_objects: list[int]
    slots: list[SlotInfo] = field(default_factory=list)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "config_name": self.config_name,
            "architecture_hash": self.architecture_hash,
            "model_hash": self.model_hash,
            "options": dict(self.options),
            "processing_size": list(self.processing_size),
            "frame_stride": self.frame_stride,
            "next_frame_index": self.next_frame_index,
            "last_memorised_index": self.last_memorised_index,
            "object_ids": list(self.object_ids),
            "object_start_frames": {str(k): v for k, v in self.object_start_frames.items()},
            "anchors": {str(k): v for k, v in self.anchors.items()},
            "removed_objects": list(self.removed_objects),
            "slots": [
                {"frame_index": s.frame_index, "encoded_objects": list(s.encoded_objects),
                 "first": s.first}
                for s in self.slots
            ],
        }  # fmt: skip

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(
        cls, data: bytes | str, limits: SessionLimits = DEFAULT_SESSION_LIMITS
    ) -> RecordHeader:
        """Parse and validate a header (``invalid_record`` on any problem)."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(raw) > limits.max_record_header_bytes:
            raise _bad(
                f"the record header is {len(raw)} bytes, over the limit of "
                f"{limits.max_record_header_bytes}"
            )
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise _bad(f"the record header is not JSON: {exc}") from exc
        return cls.from_dict(document, limits)

    @classmethod
    def from_dict(
        cls, document: object, limits: SessionLimits = DEFAULT_SESSION_LIMITS
    ) -> RecordHeader:
        if not isinstance(document, dict):
            raise _bad("the record header must be a JSON object")
        if document.get("format") != RECORD_FORMAT or document.get("version") != RECORD_VERSION:
            raise _bad(
                f"unsupported record {document.get('format')!r} version "
                f"{document.get('version')!r}; expected {RECORD_FORMAT} v{RECORD_VERSION}"
            )
        d = _Fields(document)
        slots = []
        for i, item in enumerate(d.array("slots")):
            s = _Fields(item, f"slots[{i}]")
            slots.append(SlotInfo(s.integer("frame_index"), tuple(s.integers("encoded_objects")),
                                  s.boolean("first")))  # fmt: skip
        size = d.integers("processing_size")
        if len(size) != 2:
            raise _bad("processing_size must be [height, width]")
        next_index = document.get("next_frame_index")
        header = cls(
            config_name=d.text("config_name"),
            architecture_hash=d.text("architecture_hash"),
            model_hash=d.text("model_hash"),
            options=d.mapping("options"),
            processing_size=(size[0], size[1]),
            frame_stride=d.integer("frame_stride"),
            next_frame_index=None if next_index is None else d.integer("next_frame_index"),
            last_memorised_index=d.integer("last_memorised_index", minimum=-1),
            object_ids=d.integers("object_ids"),
            object_start_frames=d.int_map("object_start_frames"),
            anchors=d.int_map("anchors"),
            removed_objects=d.integers("removed_objects"),
            slots=slots,
        )
        header.validate(limits)
        return header

    # ------------------------------------------------------------------ validation

    def memory_options(self) -> MemoryOptions:
        try:
            return MemoryOptions.from_dict(self.options)
        except (TypeError, ValueError) as exc:
            raise _bad(f"record options: {exc}") from exc

    def slot_bytes(self) -> int:
        """Decoded bytes of one slot payload (frame + label map at processing size)."""
        h, w = self.processing_size
        return h * w * 4

    def decoded_bytes(self) -> int:
        return len(self.slots) * self.slot_bytes()

    def validate(self, limits: SessionLimits = DEFAULT_SESSION_LIMITS) -> None:
        """Refuse an inconsistent header or one over ``limits`` (``invalid_record``)."""
        h, w = self.processing_size
        side = limits.max_processing_side
        if min(h, w) < MIN_PROCESSING_SIDE or max(h, w) > side:
            raise _bad(f"processing size {w}x{h} is outside {MIN_PROCESSING_SIDE}..{side} px")
        if self.frame_stride < 1:
            raise _bad("frame_stride must be at least 1")
        options = self.memory_options()
        if options.max_memory_frames > limits.max_memory_frames:
            raise _bad(
                f"max_memory_frames {options.max_memory_frames} exceeds this host's limit of "
                f"{limits.max_memory_frames}"
            )
        if options.max_objects > limits.max_objects:
            raise _bad(
                f"max_objects {options.max_objects} exceeds this host's limit of "
                f"{limits.max_objects}"
            )
        _check_ids(self.object_ids, "object_ids")
        _check_ids(self.removed_objects, "removed_objects")
        if len(self.object_ids) > options.max_objects:
            raise _bad(f"{len(self.object_ids)} objects exceed max_objects {options.max_objects}")
        if set(self.object_ids) & set(self.removed_objects):
            raise _bad("an object is both live and removed")
        if set(self.object_start_frames) != set(self.object_ids):
            raise _bad("object_start_frames must name exactly the live objects")
        if len(self.slots) > options.max_memory_frames:
            raise _bad(
                f"{len(self.slots)} slots exceed the memory capacity {options.max_memory_frames}"
            )
        indices = [s.frame_index for s in self.slots]
        if len(set(indices)) != len(indices) or any(i < 0 for i in indices):
            raise _bad("slot frame indices must be unique and non-negative")
        known = set(self.object_ids) | set(self.removed_objects)
        for slot in self.slots:
            _check_ids(list(slot.encoded_objects), f"slot {slot.frame_index} objects")
            if not set(slot.encoded_objects) <= known:
                raise _bad(f"slot {slot.frame_index} encodes objects the record does not know")
        firsts = [s.frame_index for s in self.slots if s.first]
        if self.slots and (len(firsts) != 1 or firsts[0] != min(indices)):
            raise _bad("exactly one slot, the earliest, must be the first frame")
        if self.slots:
            if self.last_memorised_index != max(indices):
                raise _bad("last_memorised_index must be the latest slot's frame")
            if self.next_frame_index is None or self.next_frame_index <= max(indices):
                raise _bad("next_frame_index must come after every slot")
        elif self.last_memorised_index != -1:
            raise _bad("a record without slots cannot have a memorised frame")
        if self.next_frame_index is not None and self.next_frame_index < 0:
            raise _bad("next_frame_index must be non-negative")
        for object_id, start in self.object_start_frames.items():
            if start < 0 or (self.next_frame_index is not None and start >= self.next_frame_index):
                raise _bad(f"object {object_id} starts at frame {start}, outside the session")
        for object_id, frame in self.anchors.items():
            if object_id not in self.object_ids or frame not in indices:
                raise _bad(f"the pin of object {object_id} names no slot of a live object")
        if self.decoded_bytes() > limits.max_record_bytes:
            raise _bad(
                f"the record decodes to {self.decoded_bytes()} bytes ({len(self.slots)} slots "
                f"at {w}x{h}), over this host's limit of {limits.max_record_bytes}"
            )

    def validate_resume(self, resume_index: int | None) -> None:
        """A session primed from this header may expect ``resume_index`` next when it is
        this header's next frame or a later one on the session's stride."""
        if resume_index is None or self.next_frame_index is None:
            return
        late = resume_index - self.next_frame_index
        if late < 0 or late % self.frame_stride:
            raise IsvosError(
                "invalid_argument",
                f"cannot resume at frame {resume_index}: the record continues at frame "
                f"{self.next_frame_index} with stride {self.frame_stride}",
            )

    def check_compatible(self, architecture_hash: str, model_hash: str, config_name: str) -> None:
        """``record_mismatch`` unless the record was made with these weights and config."""
        if self.architecture_hash != architecture_hash:
            raise IsvosError(
                "record_mismatch",
                f"the record was made with config {self.config_name!r}; this host runs "
                f"{config_name!r}",
            )
        if self.model_hash != model_hash:
            raise IsvosError(
                "record_mismatch",
                f"the record was made with checkpoint {self.model_hash}; this host runs "
                f"{model_hash}: re-run the job from the start or on a host with those weights",
            )


@dataclass
class SessionRecord:
    """A header and the payload of each of its slots."""

    header: RecordHeader
    payloads: dict[int, SlotPayload]  # by frame index; exactly the header's slots

    def __post_init__(self) -> None:
        wanted = {s.frame_index for s in self.header.slots}
        if set(self.payloads) != wanted:
            missing = sorted(wanted - set(self.payloads))
            raise _bad(f"the record lacks the payloads of slots {missing[:8]}")

    def slots(self) -> list[tuple[SlotInfo, SlotPayload]]:
        return [(s, self.payloads[s.frame_index]) for s in self.header.slots]

    def to_bytes(self) -> bytes:
        header = self.header.to_json()
        parts = [_RECORD_MAGIC, _U16.pack(RECORD_VERSION), _U32.pack(len(header)), header]
        for slot in self.header.slots:
            payload = encode_slot(self.payloads[slot.frame_index])
            parts += [_U32.pack(len(payload)), payload]
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, data: bytes, limits: SessionLimits = DEFAULT_SESSION_LIMITS
    ) -> SessionRecord:
        """Decode and validate a full record (``invalid_record`` on any problem)."""
        view = memoryview(data)
        if len(view) < 14 or bytes(view[:8]) != _RECORD_MAGIC:
            raise _bad("not a session record (bad magic)")
        (version,) = _U16.unpack_from(view, 8)
        if version != RECORD_VERSION:
            raise _bad(f"record version {version} is not supported (expected {RECORD_VERSION})")
        (length,) = _U32.unpack_from(view, 10)
        offset = 14 + length
        if offset > len(view):
            raise _bad("the record is truncated inside its header")
        header = RecordHeader.from_json(bytes(view[14:offset]), limits)
        payloads = {}
        for slot in header.slots:
            block, offset = _block(view, offset, f"the record, at slot {slot.frame_index}")
            payloads[slot.frame_index] = decode_slot(
                block, header.processing_size, slot.frame_index
            )
        if offset != len(view):
            raise _bad(f"{len(view) - offset} unexpected bytes after the last slot")
        return cls(header, payloads)

    @classmethod
    def from_parts(
        cls,
        header: bytes | RecordHeader,
        slots: Mapping[int, bytes | SlotPayload],
        limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    ) -> SessionRecord:
        """A record from a header and slot payloads persisted apart (extra slots ignored)."""
        if not isinstance(header, RecordHeader):
            header = RecordHeader.from_json(header, limits)
        else:
            header.validate(limits)
        payloads = {}
        for slot in header.slots:
            item = slots.get(slot.frame_index)
            if item is None:
                raise _bad(f"the payload of slot {slot.frame_index} is missing")
            if not isinstance(item, SlotPayload):
                item = decode_slot(item, header.processing_size, slot.frame_index)
            _check_payload(item, header.processing_size, slot.frame_index)
            payloads[slot.frame_index] = item
        return cls(header, payloads)


# ---------------------------------------------------------------------- slot payloads


def encode_slot(payload: SlotPayload) -> bytes:
    h, w = payload.labels.shape
    _check_payload(payload, (h, w), payload.frame_index)
    image = zlib.compress(np.ascontiguousarray(payload.image).tobytes(), _ZLIB_LEVEL)
    labels = zlib.compress(np.ascontiguousarray(payload.labels).tobytes(), _ZLIB_LEVEL)
    return b"".join((
        _SLOT_MAGIC, _SLOT_HEAD.pack(RECORD_VERSION, payload.frame_index, h, w),
        _U32.pack(len(image)), image, _U32.pack(len(labels)), labels,
    ))  # fmt: skip


def decode_slot(data: bytes | memoryview, size: tuple[int, int], frame_index: int) -> SlotPayload:
    """A slot payload that must be frame ``frame_index`` at processing ``size``; its
    arrays are decompressed with a bound derived from ``size``, never from the data."""
    view = memoryview(data)
    head = len(_SLOT_MAGIC) + _SLOT_HEAD.size
    if len(view) < head or bytes(view[: len(_SLOT_MAGIC)]) != _SLOT_MAGIC:
        raise _bad(f"slot {frame_index}: not a slot payload (bad magic)")
    version, index, h, w = _SLOT_HEAD.unpack_from(view, len(_SLOT_MAGIC))
    if version != RECORD_VERSION:
        raise _bad(f"slot {frame_index}: version {version} is not supported")
    if index != frame_index or (h, w) != tuple(size):
        raise _bad(
            f"slot {frame_index}: the payload is frame {index} at {w}x{h}, expected frame "
            f"{frame_index} at {size[1]}x{size[0]}"
        )
    image, offset = _inflate(view, head, h * w * 3, frame_index, "frame")
    labels, offset = _inflate(view, offset, h * w, frame_index, "label map")
    if offset != len(view):
        raise _bad(f"slot {frame_index}: unexpected bytes after the label map")
    payload = SlotPayload(
        frame_index,
        np.frombuffer(image, np.uint8).reshape(h, w, 3).copy(),
        np.frombuffer(labels, np.uint8).reshape(h, w).copy(),
    )
    return payload


def _block(view: memoryview, offset: int, where: str) -> tuple[memoryview, int]:
    """The length-prefixed block at ``offset`` and the offset after it."""
    if offset + 4 > len(view):
        raise _bad(f"{where}: truncated before a block")
    (size,) = _U32.unpack_from(view, offset)
    offset += 4
    if offset + size > len(view):
        raise _bad(f"{where}: truncated inside a block")
    return view[offset : offset + size], offset + size


def _inflate(view: memoryview, offset: int, expected: int, index: int, what: str):
    block, offset = _block(view, offset, f"slot {index}, its {what}")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(block, expected + 1)
    except zlib.error as exc:
        raise _bad(f"slot {index}: the {what} does not decompress ({exc})") from exc
    if len(out) != expected or not inflater.eof or inflater.unconsumed_tail:
        raise _bad(f"slot {index}: the {what} does not decode to {expected} bytes")
    return out, offset


def _check_payload(payload: SlotPayload, size: tuple[int, int], frame_index: int) -> None:
    h, w = size
    image, labels = payload.image, payload.labels
    if payload.frame_index != frame_index:
        raise _bad(f"slot {frame_index}: the payload is frame {payload.frame_index}")
    if image.dtype != np.uint8 or image.shape != (h, w, 3):
        raise _bad(f"slot {frame_index}: the frame is {image.dtype} {image.shape}, not [h, w, 3]")
    if labels.dtype != np.uint8 or labels.shape != (h, w):
        raise _bad(f"slot {frame_index}: the label map is {labels.dtype} {labels.shape}")


# ---------------------------------------------------------------------- field readers


def _check_ids(ids: list[int], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise _bad(f"{what} repeat an id")
    bad = [i for i in ids if not 1 <= i <= MAX_OBJECT_ID]
    if bad:
        raise _bad(f"{what}: object id {bad[0]} is outside 1..{MAX_OBJECT_ID}")


class _Fields:
    """Typed reads of a JSON object's fields, refusing wrong types."""

    def __init__(self, document: object, where: str = "header") -> None:
        if not isinstance(document, dict):
            raise _bad(f"{where} must be a JSON object")
        self.document = document
        self.where = where

    def _get(self, key: str):
        if key not in self.document:
            raise _bad(f"{self.where} lacks {key!r}")
        return self.document[key]

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._get(key)
        if type(value) is not int or not minimum <= value <= _MAX_INT:
            raise _bad(f"{self.where}.{key} must be an integer in {minimum}..{_MAX_INT}")
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if type(value) is not bool:
            raise _bad(f"{self.where}.{key} must be true or false")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or len(value) > 256:
            raise _bad(f"{self.where}.{key} must be a short string")
        return value

    def array(self, key: str) -> list:
        value = self._get(key)
        if not isinstance(value, list):
            raise _bad(f"{self.where}.{key} must be a list")
        return value

    def mapping(self, key: str) -> dict:
        value = self._get(key)
        if not isinstance(value, dict):
            raise _bad(f"{self.where}.{key} must be an object")
        return value

    def integers(self, key: str) -> list[int]:
        values = self.array(key)
        if len(values) > 4 * MAX_OBJECT_ID or any(
            type(v) is not int or abs(v) > _MAX_INT for v in values
        ):
            raise _bad(f"{self.where}.{key} must be a short list of integers")
        return values

    def int_map(self, key: str) -> dict[int, int]:
        mapping = self.mapping(key)
        if len(mapping) > MAX_OBJECT_ID:
            raise _bad(f"{self.where}.{key} has too many entries")
        out = {}
        for k, v in mapping.items():
            plain = isinstance(k, str) and 0 < len(k) <= 3 and k.isascii() and k.isdecimal()
            if not (plain and type(v) is int and abs(v) <= _MAX_INT):
                raise _bad(f"{self.where}.{key} must map object ids to frame indices")
            out[int(k)] = v
        return out
