"""Sessions on a real Triton server: lifecycle, isolation, parity with the local backend,
idempotent steps, records."""

from __future__ import annotations

import numpy as np
import pytest

from isvos.processing import masks_from_labels
from service.backends.base import BackendError
from tests.service.triton.conftest import assert_same_outputs, raw, run_clip

pytestmark = pytest.mark.timeout(120)


def test_open_step_add_remove_close(triton_backend, clip):
    frames, labels = clip[0], clip[1]
    backend = triton_backend
    handle = backend.open("lifecycle", frames.shape[1:3], {"max_objects": 4})
    assert handle.epoch == 0 and handle.processing_size == (96, 160)
    with pytest.raises(BackendError) as error:
        backend.open("lifecycle", frames.shape[1:3])
    assert error.value.code == "already_exists"
    first = backend.step(handle, 0, frames[0], masks_from_labels(labels[0], [1]))
    assert first.object_ids == [1]
    assert first.probabilities.shape == (2, 96, 160)
    assert first.labels.dtype == np.uint8 and set(np.unique(first.labels)) <= {0, 1}
    assert (first.labels == 1).sum() == (labels[0] == 1).sum()  # the given mask, exactly
    for i in range(1, 4):
        out = backend.step(handle, i, frames[i])
        assert (out.labels == 1).any()
    added = backend.step(handle, 4, frames[4], masks_from_labels(labels[4], [2]))
    assert added.object_ids == [1, 2]
    assert added.probabilities.shape == (3, 96, 160)
    backend.remove_objects(handle, [1])
    out = backend.step(handle, 5, frames[5])
    assert out.object_ids == [2] and not (out.labels == 1).any() and (out.labels == 2).any()
    record = backend.record(handle)  # assembled by the client from what it holds
    server = backend.run(lambda b: b._server_header(handle, b.sessions["lifecycle"]))
    assert record.header == server and record.header.object_ids == [2]
    assert record.header.removed_objects == [1] and record.header.next_frame_index == 6
    assert [s.frame_index for s in record.header.slots] == [0, 4]
    backend.close(handle)
    with pytest.raises(BackendError) as error:
        backend.step(handle, 6, frames[6])
    assert error.value.code == "not_found"
    backend.close(handle)  # idempotent


def test_matches_local_backend(triton_backend, local_backend, clip):
    """30 frames, two objects, the second added at frame 10: identical label maps."""
    frames, labels = clip[0][:30], clip[1][:30]
    handle, remote = run_clip(triton_backend, "parity", frames, labels, add_at=10)
    triton_backend.close(handle)
    _, local = run_clip(local_backend, "parity", frames, labels, add_at=10)
    assert remote[-1].object_ids == [1, 2]
    assert_same_outputs(remote, local)
    assert (remote[-1].labels == 2).sum() > 0
    # The in-process backend `isvos segment` uses by default (eager modules).
    from service.backends import SyncBackend
    from service.backends.local import LocalBackend
    from tests.conftest import TINY_CHECKPOINT

    with SyncBackend(lambda: LocalBackend.from_model("tiny", str(TINY_CHECKPOINT))) as eager:
        _, default = run_clip(eager, "parity", frames, labels, add_at=10)
    assert_same_outputs(remote, default)


def test_interleaved_sessions_stay_isolated(triton_backend, local_backend, clip):
    frames, labels = clip[0][:12], clip[1][:12]
    flipped, flipped_labels = frames[:, :, ::-1].copy(), labels[:, :, ::-1].copy()
    a = triton_backend.open("iso-a", frames.shape[1:3], {"max_objects": 4})
    b = triton_backend.open("iso-b", frames.shape[1:3], {"max_objects": 4})
    out_a, out_b = [], []
    for i in range(len(frames)):
        _, [oa] = run_clip(triton_backend, "", frames, labels, steps=[i], handle=a)
        _, [ob] = run_clip(triton_backend, "", flipped, flipped_labels, steps=[i], handle=b)
        out_a.append(oa)
        out_b.append(ob)
    _, ref_a = run_clip(local_backend, "ref-a", frames, labels)
    _, ref_b = run_clip(local_backend, "ref-b", flipped, flipped_labels)
    assert_same_outputs(out_a, ref_a)
    assert_same_outputs(out_b, ref_b)
    triton_backend.close(a)
    triton_backend.close(b)


def test_repeated_step_is_cached_and_gap_refused(triton_backend, clip):
    frames, labels = clip[0], clip[1]
    handle, outs = run_clip(triton_backend, "idem", frames, labels, steps=range(4))
    again = triton_backend.step(handle, 3, frames[3])
    np.testing.assert_array_equal(again.labels, outs[3].labels)
    np.testing.assert_array_equal(again.probabilities, outs[3].probabilities)
    for bad in (5, 100):
        with pytest.raises(BackendError) as error:
            triton_backend.step(handle, bad, frames[min(bad, 39)])
        assert error.value.code == "frame_gap", error.value
    assert triton_backend.step(handle, 4, frames[4]).frame_index == 4
    triton_backend.close(handle)


def test_client_record_equals_server_record(triton_backend, clip):
    from isvos.record import SessionRecord

    frames, labels = clip[0], clip[1]
    handle, _ = run_clip(triton_backend, "record", frames[:23], labels[:23], add_at=7)
    del triton_backend.sessions["record"].frames[22]  # as if frame 22's answer was lost
    again = triton_backend.step(handle, 22, frames[22])  # the repeat restores it
    assert again.replayed and again.memorised
    triton_backend.remove_objects(handle, [1])
    client = triton_backend.record(handle)
    server = SessionRecord.from_bytes(
        raw(triton_backend, "record", "record:0")["record"]  # the operator request kind
    )
    assert len(server.header.slots) >= 4
    assert client.header == server.header
    for slot in server.header.slots:
        a, b = client.payloads[slot.frame_index], server.payloads[slot.frame_index]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert client.to_bytes() == server.to_bytes()
    # Only the frames of the memory bank are held on the client.
    held = set(triton_backend.sessions["record"].frames)
    assert held == {s.frame_index for s in server.header.slots}
    triton_backend.close(handle)


def test_prime_from_record_continues_identically(triton_backend, clip):
    frames, labels = clip[0][:20], clip[1][:20]
    handle, full = run_clip(triton_backend, "prime-src", frames, labels)
    triton_backend.close(handle)
    handle, first = run_clip(triton_backend, "prime-a", frames, labels, steps=range(11))
    record = triton_backend.record(handle)
    triton_backend.close(handle)
    primed = triton_backend.prime("prime-b", record, epoch=3)
    assert primed.epoch == 3
    rest = [triton_backend.step(primed, i, frames[i]) for i in range(11, 20)]
    assert_same_outputs(first + rest, full)
    triton_backend.close(primed)


def test_stats_and_metrics(triton_backend, triton_server, clip):
    import urllib.request

    handle, _ = run_clip(triton_backend, "stats", clip[0], clip[1], steps=range(3))
    stats = triton_backend.stats()
    mine = [s for s in stats["session_list"] if s["id"] == "stats:0"]
    assert mine[0]["epoch"] == 0
    assert mine and mine[0]["next_frame_index"] == 3 and mine[0]["memory_bytes"] > 0
    assert stats["memory_bank_bytes"] >= mine[0]["memory_bytes"]
    assert stats["reserved_bytes"] >= mine[0]["reserved_bytes"] >= mine[0]["memory_bytes"]
    assert stats["model"] == "tiny" and stats["device"] == "cpu"
    triton_backend.close(handle)
    after = triton_backend.stats()
    assert "stats:0" not in {s["id"] for s in after["session_list"]}
    text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    assert "isvos_sessions{" in text and "isvos_memory_bank_bytes{" in text


def test_a_new_epoch_fences_the_old_one_on_the_server(triton_backend, clip):
    """Priming epoch 1 frees epoch 0 at once (its bytes too); epoch 0 is refused after."""
    from isvos import triton_contract as C

    frames, labels = clip[0], clip[1]
    handle, _ = run_clip(triton_backend, "fence", frames, labels, steps=range(6))
    record = triton_backend.record(handle)
    before = {s["id"]: s for s in triton_backend.stats()["session_list"]}
    assert before["fence:0"]["memory_bytes"] > 0
    triton_backend.sessions.pop("fence")  # the client moves on, as after losing its server
    primed = triton_backend.prime("fence", record, epoch=1)
    after = {s["id"]: s for s in triton_backend.stats()["session_list"]}
    assert (
        "fence:0" not in after
        and after["fence:1"]["reserved_bytes"] == (before["fence:0"]["reserved_bytes"])
    )
    step = {C.FRAME_INDEX: np.array([6], np.int64), C.IMAGE: frames[6]}
    with pytest.raises(BackendError) as error:
        raw(triton_backend, C.STEP, "fence:0", **step)
    assert error.value.code == "stale_epoch"
    out = triton_backend.step(primed, 6, frames[6])
    assert out.frame_index == 6
    triton_backend.close(primed)
