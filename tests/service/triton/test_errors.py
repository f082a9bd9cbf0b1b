"""Bad requests get errors with stable codes, never a crash; the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from isvos.processing import masks_from_labels
from service import triton_contract as C
from service.backends.base import BackendError
from tests.service.triton.conftest import run_clip

pytestmark = pytest.mark.timeout(120)


def _code(call) -> str:
    with pytest.raises(BackendError) as error:
        call()
    return error.value.code


def _raw(backend, kind, corr, *, start=False, end=False, **fields):
    return backend._infer(kind, fields, corr, start=start, end=end, retry=False)


def _image(h=96, w=160):
    return np.zeros((h, w, 3), np.uint8)


def test_unknown_sessions_and_kinds(triton_backend):
    b = triton_backend
    step = {C.FRAME_INDEX: np.array([0], np.int64), C.IMAGE: _image()}
    # A step of a sequence Triton never saw (no START): refused by Triton itself.
    assert _code(lambda: _raw(b, C.STEP, "never-opened:0", **step)) == C.UNKNOWN_SESSION
    # A step that starts a sequence: the model has no session for it.
    assert _code(lambda: _raw(b, C.STEP, "bad-start:0", start=True, end=True, **step)) == (
        C.UNKNOWN_SESSION
    )
    assert _code(lambda: _raw(b, "explode", "bad-kind:0", start=True, end=True)) == (
        C.INVALID_ARGUMENT
    )
    remove = {C.OBJECT_IDS: np.array([1], np.int32)}
    assert _code(lambda: _raw(b, C.REMOVE, "gone:0", start=True, end=True, **remove)) == (
        C.UNKNOWN_SESSION
    )
    assert _raw(b, C.CLOSE, "gone:0", start=True, end=True)["info"]["closed"] is False


def test_bad_opens(triton_backend):
    b = triton_backend
    size = (96, 160)
    assert _code(lambda: b.open("o1", size, {"no_such_option": 1})) == C.INVALID_ARGUMENT
    assert _code(lambda: b.open("o2", size, {"max_memory_frames": 1})) == C.INVALID_ARGUMENT
    assert _code(lambda: b.open("o3", (8, 8))) == C.INVALID_ARGUMENT
    assert _code(lambda: b.open("o4", (1080, 4000))) == C.RESOURCE_EXHAUSTED
    assert _code(lambda: b.open("o5", size, {"max_objects": 200})) == C.RESOURCE_EXHAUSTED
    bad_json = {C.OPTIONS: "{not json", C.PROCESSING_SIZE: np.array(size, np.int32)}
    assert _code(lambda: _raw(b, C.OPEN, "o6:0", start=True, end=True, **bad_json)) == (
        C.INVALID_ARGUMENT
    )
    # An open of a sequence already running, without START.
    handle = b.open("o7", size)
    again = {C.PROCESSING_SIZE: np.array(size, np.int32)}
    assert _code(lambda: _raw(b, C.OPEN, "o7:0", **again)) == C.INVALID_ARGUMENT
    b.close(handle)
    # Priming garbage, and a record of other weights.
    assert _code(lambda: b.prime("p1", b"not a record")) == C.INVALID_ARGUMENT
    garbage = {C.RECORD: b"not a record either"}
    assert _code(lambda: _raw(b, C.PRIME, "p2:0", start=True, end=True, **garbage)) == (
        C.INVALID_ARGUMENT
    )


def test_bad_steps(triton_backend, clip):
    frames, labels = clip[0], clip[1]
    b = triton_backend
    handle = b.open("bad-steps", frames.shape[1:3], {"max_objects": 2})
    # The first step needs masks.
    assert _code(lambda: b.step(handle, 0, frames[0])) == C.FAILED_PRECONDITION
    # Wrong frame size, wrong channel count (refused by Triton: dims), wrong dtype.
    assert _code(lambda: b.step(handle, 0, _image(64, 64), {1: np.ones((64, 64), bool)})) in (
        C.FAILED_PRECONDITION, C.INVALID_OBJECTS,
    )  # fmt: skip
    corr = C.correlation_id(handle.session_id, handle.epoch)
    four = {C.FRAME_INDEX: np.array([0], np.int64), C.IMAGE: np.zeros((96, 160, 4), np.uint8)}
    assert _code(lambda: _raw(b, C.STEP, corr, **four)) == C.INVALID_ARGUMENT
    floats = [grpcclient.InferInput(C.KIND, [1, 1], "BYTES"),
              grpcclient.InferInput(C.FRAME_INDEX, [1, 1], "INT64"),
              grpcclient.InferInput(C.IMAGE, [1, 96, 160, 3], "FP32")]  # fmt: skip
    floats[0].set_data_from_numpy(np.array([[b"step"]], dtype=np.object_))
    floats[1].set_data_from_numpy(np.array([[0]], np.int64))
    floats[2].set_data_from_numpy(np.zeros((1, 96, 160, 3), np.float32))
    with pytest.raises(Exception, match="(?i)datatype|data type|FP32"):
        b.client.infer(C.MODEL_NAME, floats, sequence_id=corr)
    # A batch of two in one request.
    two = grpcclient.InferInput(C.KIND, [2, 1], "BYTES")
    two.set_data_from_numpy(np.array([[b"stats"], [b"stats"]], dtype=np.object_))
    with pytest.raises(Exception, match="batch"):
        b.client.infer(C.MODEL_NAME, [two], sequence_id=corr)
    # Too many objects, an empty mask, a step without FRAME_INDEX.
    three = masks_from_labels(labels[0], [1, 2])
    three[3] = np.zeros((96, 160), bool)
    three[3][:4, :4] = True
    assert _code(lambda: b.step(handle, 0, frames[0], three)) == C.INVALID_OBJECTS
    empty = {1: labels[0] == 1, 2: np.zeros((96, 160), bool)}
    assert _code(lambda: b.step(handle, 0, frames[0], empty)) == C.INVALID_OBJECTS
    assert _code(lambda: _raw(b, C.STEP, corr, **{C.IMAGE: frames[0]})) == C.INVALID_ARGUMENT
    # The session survives all that.
    _, outs = run_clip(b, "", frames, labels, steps=range(3), handle=handle)
    assert outs[-1].object_ids == [1, 2]
    # Removing an unknown object; masks for a removed one.
    assert _code(lambda: b.remove_objects(handle, [7])) == C.INVALID_OBJECTS
    b.remove_objects(handle, [2])
    assert _code(lambda: b.step(handle, 3, frames[3], {2: labels[3] == 2})) == C.INVALID_OBJECTS
    b.close(handle)


def test_record_of_other_weights_is_refused(triton_backend, clip):
    import io

    b = triton_backend
    handle, _ = run_clip(b, "mismatch", clip[0], clip[1], steps=range(2))
    record = b.record(handle)
    b.close(handle)
    archive = np.load(io.BytesIO(record))
    header = json.loads(archive["header"].tobytes())
    header["model_hash"] = "0" * 16
    arrays = {k: archive[k] for k in archive.files}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    assert _code(lambda: b.prime("mismatch-2", buffer.getvalue())) == C.RECORD_MISMATCH


def test_server_still_serves(triton_backend, triton_server, clip):
    assert triton_server.alive()
    handle, outs = run_clip(triton_backend, "after-errors", clip[0], clip[1], steps=range(3))
    assert (outs[-1].labels > 0).any()
    triton_backend.close(handle)
    stats = triton_backend.stats()
    assert stats["errors"].get(C.INTERNAL, 0) == 0, stats["errors"]
