"""Session records are untrusted input: a hostile corpus is refused with ``invalid_record``
(an INVALID_ARGUMENT status) before anything is allocated from it. Torch-free."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from isvos.errors import ERRORS, IsvosError
from isvos.limits import SessionLimits
from isvos.record import (
    RecordHeader,
    SessionRecord,
    SlotInfo,
    SlotPayload,
    decode_slot,
    encode_slot,
)

pytestmark = pytest.mark.timeout(60)
SIZE = (48, 64)


def _header(**changes) -> RecordHeader:
    header = RecordHeader(
        config_name="tiny", architecture_hash="a" * 16, model_hash="b" * 16,
        options={"max_memory_frames": 4, "max_objects": 3}, processing_size=SIZE,
        frame_stride=1, next_frame_index=11, last_memorised_index=10, object_ids=[1, 2],
        object_start_frames={1: 0, 2: 5}, anchors={2: 5}, removed_objects=[3],
        slots=[SlotInfo(0, (1, 3), True), SlotInfo(5, (1, 2, 3), False),
               SlotInfo(10, (1, 2), False)],
    )  # fmt: skip
    for key, value in changes.items():
        setattr(header, key, value)
    return header


def _payload(index: int, size=SIZE) -> SlotPayload:
    rng = np.random.default_rng(index)
    return SlotPayload(
        index,
        rng.integers(0, 255, (*size, 3), dtype=np.uint8),
        rng.integers(0, 3, size, dtype=np.uint8),
    )


def _record(**changes) -> SessionRecord:
    header = _header(**changes)
    return SessionRecord(header, {s.frame_index: _payload(s.frame_index) for s in header.slots})


def _raw_record(header: dict, slots: list[bytes]) -> bytes:
    blob = json.dumps(header).encode()
    parts = [b"ISVOSREC", struct.pack("<HI", 2, len(blob)), blob]
    for slot in slots:
        parts += [struct.pack("<I", len(slot)), slot]
    return b"".join(parts)


def _raw_slot(index: int, h: int, w: int, image: bytes, labels: bytes) -> bytes:
    return b"".join((b"ISVOSSLT", struct.pack("<HqII", 2, index, h, w),
                     struct.pack("<I", len(image)), image,
                     struct.pack("<I", len(labels)), labels))  # fmt: skip


def _refused(data: bytes, limits: SessionLimits | None = None) -> IsvosError:
    with pytest.raises(IsvosError) as error:
        SessionRecord.from_bytes(data, limits or SessionLimits())
    assert error.value.code == "invalid_record", error.value
    assert ERRORS[error.value.code].grpc_status == "INVALID_ARGUMENT"
    assert ERRORS[error.value.code].http_status == 400
    return error.value


def test_round_trip_and_parts():
    record = _record()
    data = record.to_bytes()
    back = SessionRecord.from_bytes(data)
    assert back.header == record.header
    for index, payload in record.payloads.items():
        np.testing.assert_array_equal(back.payloads[index].image, payload.image)
        np.testing.assert_array_equal(back.payloads[index].labels, payload.labels)
    # Persisted apart: the header as JSON, each slot once; an extra (evicted) slot is ignored.
    slots = {i: encode_slot(p) for i, p in record.payloads.items()}
    slots[99] = encode_slot(_payload(99))
    assert SessionRecord.from_parts(record.header.to_json(), slots).to_bytes() == data
    assert len(record.header.to_json()) < 1024  # the header is small


def test_a_small_record_that_decodes_to_a_huge_one_is_refused_without_allocating():
    """A 141 KB zlib bomb that would inflate to 144 MB, sent as a slot's frame."""
    bomb = zlib.compress(bytes(144 * 2**20), 9)
    assert len(bomb) < 150_000
    header = _header().to_dict()
    header["slots"] = header["slots"][:1]
    header.update(last_memorised_index=0, anchors={}, object_start_frames={"1": 0, "2": 0})
    data = _raw_record(header, [_raw_slot(0, *SIZE, bomb, zlib.compress(bytes(48 * 64)))])
    tracemalloc.start()
    try:
        error = _refused(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "does not decode" in str(error)
    assert peak < 4 * 2**20, peak  # nothing near 144 MB was allocated


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"processing_size": (1920, 1920), "options": {"max_memory_frames": 16},
          "slots": [SlotInfo(5 * i, (1, 2), i == 0) for i in range(10)], "anchors": {},
          "last_memorised_index": 45, "next_frame_index": 46},
         "over this host's limit"),  # 10 slots x 14.7 MB declared, within every other bound
        ({"processing_size": (8, 64)}, "outside"),
        ({"processing_size": (48, 4000)}, "outside"),
        ({"object_ids": [0, 2], "object_start_frames": {0: 0, 2: 5}}, "outside 1..255"),
        ({"object_ids": [1, 256], "object_start_frames": {1: 0, 256: 5}}, "outside 1..255"),
        ({"object_ids": [1, 1]}, "repeat"),
        ({"object_ids": [1, 2, 4, 5], "object_start_frames": {1: 0, 2: 5, 4: 5, 5: 5}},
         "exceed max_objects"),
        ({"removed_objects": [2]}, "both live and removed"),
        ({"next_frame_index": 10}, "after every slot"),
        ({"last_memorised_index": 5}, "latest slot"),
        ({"slots": [SlotInfo(0, (1, 3), True), SlotInfo(0, (1, 2), False)]}, "unique"),
        ({"slots": [SlotInfo(0, (1,), False), SlotInfo(5, (1,), True)]}, "first frame"),
        ({"slots": [SlotInfo(i, (1,), i == 0) for i in range(5)], "last_memorised_index": 4,
          "anchors": {}}, "capacity"),
        ({"slots": [SlotInfo(0, (1, 9), True), SlotInfo(10, (1,), False)]}, "does not know"),
        ({"anchors": {2: 7}}, "pin"),
        ({"object_start_frames": {1: 0, 2: 50}}, "outside the session"),
        ({"frame_stride": 0}, "frame_stride"),
        ({"options": {"max_memory_frames": 4, "bogus": 1}}, "options"),
        ({"options": {"max_memory_frames": 4.5}}, "options"),
        ({"next_frame_index": 2**60}, "integer"),
        ({"anchors": {"\u00b2": 5}}, "map object ids"),
    ],
)  # fmt: skip
def test_inconsistent_headers_are_refused(changes, message):
    header = _header(**changes)
    slots = [encode_slot(_payload(s.frame_index)) for s in header.slots]
    data = _raw_record(header.to_dict(), slots)
    error = _refused(data)
    assert message in str(error), str(error)


def test_malformed_bytes_are_refused():
    good = _record().to_bytes()
    header_end = 14 + struct.unpack_from("<I", good, 10)[0]
    cases = {
        "empty": b"",
        "garbage": b"not a record at all",
        "version": good[:8] + struct.pack("<H", 1) + good[10:],
        "truncated header": good[: header_end - 5],
        "truncated slot": good[:-10],
        "trailing bytes": good + b"x",
        "header not json": good[:14] + b"{" * (header_end - 14) + good[header_end:],
        "huge header": good[:10] + struct.pack("<I", 2**31) + good[14:],
    }
    for name, data in cases.items():
        error = _refused(data)
        assert error.message, name
    small = SessionLimits(max_record_header_bytes=64)
    assert "header" in str(_refused(good, small))


def test_slot_payloads_must_match_their_header():
    payload = _payload(5)
    data = encode_slot(payload)
    assert decode_slot(data, SIZE, 5).frame_index == 5
    with pytest.raises(IsvosError, match="expected frame 6"):
        decode_slot(data, SIZE, 6)
    with pytest.raises(IsvosError, match="expected frame 5 at 64x32"):
        decode_slot(data, (32, 64), 5)
    wrong = _raw_slot(5, *SIZE, zlib.compress(bytes(10)), zlib.compress(bytes(48 * 64)))
    with pytest.raises(IsvosError, match="does not decode"):
        decode_slot(wrong, SIZE, 5)
    with pytest.raises(IsvosError, match="does not decompress"):
        decode_slot(_raw_slot(5, *SIZE, b"nonsense", b"x"), SIZE, 5)
    with pytest.raises(IsvosError, match="lacks the payloads"):
        SessionRecord(_header(), {0: _payload(0)})
    with pytest.raises(IsvosError, match="missing"):
        SessionRecord.from_parts(_header().to_json(), {0: encode_slot(_payload(0))})


def test_resume_must_follow_the_record_on_its_stride():
    header = _header(frame_stride=2, next_frame_index=12)
    header.validate_resume(None)
    header.validate_resume(16)
    for bad in (10, 13):
        with pytest.raises(IsvosError, match="cannot resume") as error:
            header.validate_resume(bad)
        assert error.value.code == "invalid_argument"


def test_compatibility_is_checked_separately():
    header = _header()
    header.check_compatible("a" * 16, "b" * 16, "tiny")
    with pytest.raises(IsvosError, match="checkpoint") as error:
        header.check_compatible("a" * 16, "c" * 16, "tiny")
    assert error.value.code == "record_mismatch"
    with pytest.raises(IsvosError, match="config"):
        header.check_compatible("d" * 16, "b" * 16, "lite")
