"""Bad requests get errors with stable codes, never a crash; the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from isvos import triton_contract as C
from isvos.processing import masks_from_labels
from service.backends.base import BackendError
from tests.service.triton.conftest import raw as _raw
from tests.service.triton.conftest import run_clip

pytestmark = pytest.mark.timeout(120)


def _code(call) -> str:
    with pytest.raises(BackendError) as error:
        call()
    return error.value.code


def _image(h=96, w=160):
    return np.zeros((h, w, 3), np.uint8)


def test_unknown_sessions_and_kinds(triton_backend):
    b = triton_backend
    step = {C.FRAME_INDEX: np.array([0], np.int64), C.IMAGE: _image()}
    # A step of a sequence Triton never saw (no START): refused by Triton itself.
    assert _code(lambda: _raw(b, C.STEP, "never-opened:0", **step)) == "not_found"
    # Only open, prime and stats start a sequence.
    assert _code(lambda: _raw(b, C.STEP, "bad-start:0", start=True, end=True, **step)) == (
        "invalid_argument"
    )
    assert _code(lambda: _raw(b, "explode", "bad-kind:0", start=True, end=True)) == (
        "invalid_argument"
    )
    # A correlation id that is not "<session>:<epoch>".
    size = {C.PROCESSING_SIZE: np.array((96, 160), np.int32)}
    assert _code(lambda: _raw(b, C.OPEN, "no-epoch", start=True, end=True, **size)) == (
        "invalid_argument"
    )
    remove = {C.OBJECT_IDS: np.array([1], np.int32)}
    assert _code(lambda: _raw(b, C.REMOVE, "gone:0", start=True, end=True, **remove)) == (
        "invalid_argument"
    )
    _raw(b, C.OPEN, "gone:0", start=True, **size)
    _raw(b, C.CLOSE, "gone:0", end=True)
    assert _code(lambda: _raw(b, C.REMOVE, "gone:0", start=False, **remove)) == "not_found"


def test_bad_opens(triton_backend):
    b = triton_backend
    size = (96, 160)
    assert _code(lambda: b.open("o1", size, {"no_such_option": 1})) == "invalid_argument"
    assert _code(lambda: b.open("o2", size, {"max_memory_frames": 1})) == "invalid_argument"
    assert _code(lambda: b.open("o3", (8, 8))) == "invalid_size"
    assert _code(lambda: b.open("o4", (1080, 4000))) == "resource_exhausted"
    assert _code(lambda: b.open("o5", size, {"max_objects": 200})) == "resource_exhausted"
    bad_json = {C.OPTIONS: "{not json", C.PROCESSING_SIZE: np.array(size, np.int32)}
    assert _code(lambda: _raw(b, C.OPEN, "o6:0", start=True, end=True, **bad_json)) == (
        "invalid_argument"
    )
    # An open of a sequence already running, without START; with START it is refused
    # instead of resetting the live session.
    handle = b.open("o7", size)
    again = {C.PROCESSING_SIZE: np.array(size, np.int32)}
    assert _code(lambda: _raw(b, C.OPEN, "o7:0", **again)) == "invalid_argument"
    assert _code(lambda: _raw(b, C.OPEN, "o7:0", start=True, **again)) == "already_exists"
    assert "o7:0" in {s["id"] for s in b.stats()["session_list"]}
    b.close(handle)
    # Priming garbage (refused by the client, then by the server itself).
    assert _code(lambda: b.prime("p1", b"not a record")) == "invalid_record"
    garbage = {C.RECORD: b"not a record either"}
    assert _code(lambda: _raw(b, C.PRIME, "p2:0", start=True, end=True, **garbage)) == (
        "invalid_record"
    )


def test_bad_steps(triton_backend, clip):
    frames, labels = clip[0], clip[1]
    b = triton_backend
    handle = b.open("bad-steps", frames.shape[1:3], {"max_objects": 2})
    # The first step needs masks.
    assert _code(lambda: b.step(handle, 0, frames[0])) == "failed_precondition"
    # Wrong frame size, wrong channel count (refused by Triton: dims), wrong dtype.
    assert _code(lambda: b.step(handle, 0, _image(64, 64), {1: np.ones((64, 64), bool)})) in (
        "failed_precondition", "invalid_objects",
    )  # fmt: skip
    corr = C.correlation_id(handle.session_id, handle.epoch)
    four = {C.FRAME_INDEX: np.array([0], np.int64), C.IMAGE: np.zeros((96, 160, 4), np.uint8)}
    assert _code(lambda: _raw(b, C.STEP, corr, **four)) == "invalid_argument"
    floats = [grpcclient.InferInput(C.KIND, [1, 1], "BYTES"),
              grpcclient.InferInput(C.FRAME_INDEX, [1, 1], "INT64"),
              grpcclient.InferInput(C.IMAGE, [1, 96, 160, 3], "FP32")]  # fmt: skip
    floats[0].set_data_from_numpy(np.array([[b"step"]], dtype=np.object_))
    floats[1].set_data_from_numpy(np.array([[0]], np.int64))
    floats[2].set_data_from_numpy(np.zeros((1, 96, 160, 3), np.float32))
    with pytest.raises(Exception, match="(?i)datatype|data type|FP32"):
        b.run(lambda be: be.client.infer(C.MODEL_NAME, floats, sequence_id=corr))
    # A batch of two in one request.
    two = grpcclient.InferInput(C.KIND, [2, 1], "BYTES")
    two.set_data_from_numpy(np.array([[b"stats"], [b"stats"]], dtype=np.object_))
    with pytest.raises(Exception, match="batch"):
        b.run(lambda be: be.client.infer(C.MODEL_NAME, [two], sequence_id=corr))
    # Too many objects, an empty mask, a step without FRAME_INDEX.
    three = masks_from_labels(labels[0], [1, 2])
    three[3] = np.zeros((96, 160), bool)
    three[3][:4, :4] = True
    assert _code(lambda: b.step(handle, 0, frames[0], three)) == "invalid_objects"
    empty = {1: labels[0] == 1, 2: np.zeros((96, 160), bool)}
    assert _code(lambda: b.step(handle, 0, frames[0], empty)) == "invalid_objects"
    assert _code(lambda: _raw(b, C.STEP, corr, **{C.IMAGE: frames[0]})) == "invalid_argument"
    # The session survives all that.
    _, outs = run_clip(b, "", frames, labels, steps=range(3), handle=handle)
    assert outs[-1].object_ids == [1, 2]
    # Removing an unknown object; masks for a removed one.
    assert _code(lambda: b.remove_objects(handle, [7])) == "invalid_objects"
    b.remove_objects(handle, [2])
    assert _code(lambda: b.step(handle, 3, frames[3], {2: labels[3] == 2})) == "invalid_objects"
    b.close(handle)


def test_record_of_other_weights_is_refused(triton_backend, clip):
    b = triton_backend
    handle, _ = run_clip(b, "mismatch", clip[0], clip[1], steps=range(2))
    record = b.record(handle)
    b.close(handle)
    record.header.model_hash = "0" * 16
    assert _code(lambda: b.prime("mismatch-2", record)) == "record_mismatch"


def test_server_still_serves(triton_backend, triton_server, clip):
    assert triton_server.alive()
    handle, outs = run_clip(triton_backend, "after-errors", clip[0], clip[1], steps=range(3))
    assert (outs[-1].labels > 0).any()
    triton_backend.close(handle)
    stats = triton_backend.stats()
    assert stats["errors"].get("internal", 0) == 0, stats["errors"]
