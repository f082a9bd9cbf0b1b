"""Session lifecycle: objects, determinism, idempotent steps, re-priming, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from isvos.config import MemoryOptions
from isvos.engine import (
    FrameIndexError,
    ObjectError,
    RecordMismatchError,
    SessionRecord,
    SessionStateError,
)
from isvos.errors import IsvosError
from tests.conftest import iou

pytestmark = pytest.mark.timeout(120)
SIZE = (96, 160)


def run(engine, frames, first_masks, *, start=0, stop=None, extra=None, options=None):
    session = engine.open_session(SIZE, options)
    results = []
    for i in range(start, stop or len(frames)):
        masks = first_masks if i == start else (extra or {}).get(i)
        results.append(session.step(i, frames[i], masks))
    return session, results


def masks_of(labels, ids):
    return {o: labels == o for o in ids}


def test_tracks_objects_through_a_clip(engine, clip):
    frames, labels = clip
    _, results = run(engine, frames, masks_of(labels[0], [1, 2]))
    scores = [iou(r.labels == o, labels[i] == o) for i, r in enumerate(results) for o in (1, 2)]
    assert np.mean(scores) > 0.75, np.mean(scores)


def test_broken_memory_read_loses_the_objects(engine, clip):
    """With the memory values zeroed the same clip is lost: the tracking test guards reads."""
    frames, labels = clip
    session = engine.open_session(SIZE)
    session.step(0, frames[0], masks_of(labels[0], [1, 2]))
    scores = []
    for i in range(1, len(frames)):
        for value in session.bank.values.values():
            value.zero_()
        result = session.step(i, frames[i])
        scores += [iou(result.labels == o, labels[i] == o) for o in (1, 2)]
    assert np.mean(scores) < 0.5


def test_object_added_mid_clip_has_no_mask_before_and_masks_after(engine, clip):
    frames, labels = clip
    k = 12
    _, results = run(engine, frames, masks_of(labels[0], [1]), extra={k: masks_of(labels[k], [2])})
    after = []
    for i, result in enumerate(results):
        if i < k:
            assert 2 not in result.object_ids and not (result.labels == 2).any()
        else:
            assert result.object_ids == [1, 2]
            assert (result.labels == 2).any()
            after.append(iou(result.labels == 2, labels[i] == 2))
    assert results[k].memorised
    assert np.mean(after) > 0.6, np.mean(after)


def test_removed_objects_vanish(engine, clip):
    frames, labels = clip
    session = engine.open_session(SIZE)
    session.step(0, frames[0], masks_of(labels[0], [1, 2]))
    for i in range(1, 5):
        session.step(i, frames[i])
    session.remove_objects([2])
    for i in range(5, 12):
        result = session.step(i, frames[i])
        assert result.object_ids == [1]
        assert not (result.labels == 2).any()
        assert result.probabilities.shape == (2, *SIZE)
    with pytest.raises(ObjectError):
        session.remove_objects([2])
    with pytest.raises(ObjectError, match="removed"):
        session.step(12, frames[12], {2: labels[12] == 2})


def test_deterministic(engine, clip):
    frames, labels = clip
    _, a = run(engine, frames, masks_of(labels[0], [1, 2]), stop=15)
    _, b = run(engine, frames, masks_of(labels[0], [1, 2]), stop=15)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.labels, y.labels)
        assert np.array_equal(x.probabilities, y.probabilities)


def test_repeated_index_returns_cached_result_and_gap_is_refused(engine, clip):
    frames, labels = clip
    from isvos.engine import Session

    session = Session(engine, SIZE, MemoryOptions(), replay_window=3)
    first = session.step(0, frames[0], masks_of(labels[0], [1]))
    second = session.step(1, frames[1])
    assert session.step(1, frames[1]) is second
    assert session.step(0, frames[0]) is first  # within the replay window
    with pytest.raises(FrameIndexError, match="expected 2"):
        session.step(3, frames[3])
    assert first.frame_index == 0 and session.next_frame_index == 2
    session.step(2, frames[2])
    session.step(3, frames[3])
    with pytest.raises(FrameIndexError):  # left the window
        session.step(0, frames[0])
    assert list(session.recent) == [1, 2, 3]


def test_video_indices_with_a_stride_and_a_late_start(engine, clip):
    """Steps carry the video's frame indices: a session may start at any frame and step
    every ``frame_stride`` frames; memorisation counts steps, not frames."""
    frames, labels = clip
    strided = engine.open_session(SIZE, MemoryOptions(mem_every=2), frame_stride=3)
    dense = engine.open_session(SIZE, MemoryOptions(mem_every=2))
    indices = list(range(4, 34, 3))
    for step, index in enumerate(indices):
        masks = masks_of(labels[index], [1, 2]) if step == 0 else None
        a = strided.step(index, frames[index], masks)
        b = dense.step(step, frames[index], masks)
        assert a.frame_index == index and a.memorised == b.memorised
        assert np.array_equal(a.probabilities, b.probabilities)
    with pytest.raises(FrameIndexError, match=f"expected {indices[-1] + 3}"):
        strided.step(indices[-1] + 1, frames[0])
    header = strided.header()
    assert header.frame_stride == 3 and header.next_frame_index == indices[-1] + 3
    assert [s.frame_index for s in header.slots] == indices[::2]


def test_reprime_gives_identical_outputs(engine, clip):
    frames, labels = clip
    options = MemoryOptions(max_memory_frames=4, mem_every=3)
    session = engine.open_session(SIZE, options)
    session.step(0, frames[0], masks_of(labels[0], [1]))
    for i in range(1, 15):
        session.step(i, frames[i], masks_of(labels[i], [2]) if i == 7 else None)
    session.remove_objects([1])
    # A new object (id 3) where object 1 was: an object added after a removal.
    added = session.step(15, frames[15], {3: labels[15] == 1})
    assert added.object_ids == [2, 3] and added.memorised
    record = SessionRecord.from_bytes(session.record().to_bytes())
    assert record.header.removed_objects == [1] and record.header.object_ids == [2, 3]
    assert any(3 in slot.encoded_objects for slot in record.header.slots)
    primed = engine.prime(record)
    for i in range(16, 36):
        a = session.step(i, frames[i])
        b = primed.step(i, frames[i])
        assert np.array_equal(a.labels, b.labels), i
        assert np.array_equal(a.probabilities, b.probabilities), i


def test_prime_refuses_a_record_of_another_checkpoint_or_config(engine, clip):
    from isvos.engine import EagerRunner, Engine
    from isvos.model import build

    frames, labels = clip
    session = engine.open_session(SIZE)
    session.step(0, frames[0], masks_of(labels[0], [1]))
    record = session.record()
    other = Engine(EagerRunner(build("tiny")))  # random weights
    with pytest.raises(RecordMismatchError, match="checkpoint") as error:
        other.prime(record)
    assert error.value.code == "record_mismatch"
    record.header.architecture_hash = "0" * 16
    with pytest.raises(RecordMismatchError, match="config"):
        engine.prime(record)
    with pytest.raises(IsvosError, match="not a session record") as error:
        SessionRecord.from_bytes(b"garbage")
    assert error.value.code == "invalid_record"


def test_blank_frame_and_tiny_memory_give_no_nan(engine, clip):
    frames, labels = clip
    options = MemoryOptions(top_k=10_000)  # more than the memory's positions
    session = engine.open_session(SIZE, options)
    session.step(0, frames[0], masks_of(labels[0], [1, 2]))
    blank = np.zeros_like(frames[1])
    for i in range(1, 4):
        result = session.step(i, blank)
        assert np.isfinite(result.probabilities).all()
        assert np.allclose(result.probabilities.sum(0), 1.0, atol=1e-4)


def test_bad_input_is_refused(engine, clip):
    frames, labels = clip
    session = engine.open_session(SIZE, MemoryOptions(max_objects=2))
    with pytest.raises(SessionStateError, match="needs at least one mask"):
        session.step(0, frames[0])
    with pytest.raises(SessionStateError, match="processes"):
        session.step(0, frames[0][:50], {1: labels[0][:50] == 1})
    with pytest.raises(ObjectError, match="empty"):
        session.step(0, frames[0], {1: np.zeros(SIZE, bool)})
    with pytest.raises(ObjectError, match="outside"):
        session.step(0, frames[0], {256: labels[0] == 1})
    three = {1: labels[0] == 1, 2: labels[0] == 2, 3: labels[0] > 0}
    with pytest.raises(ObjectError, match="exceed"):
        session.step(0, frames[0], three)
    session.step(0, frames[0], {1: labels[0] == 1})


def test_session_continues_after_all_objects_are_removed(engine, clip):
    frames, labels = clip
    session = engine.open_session(SIZE)
    session.step(0, frames[0], masks_of(labels[0], [1]))
    last = session.step(1, frames[1])
    session.remove_objects([1, 1])  # duplicates are fine
    assert session.step(1, frames[1]) is last  # the last step stays replayable
    for i in range(2, 8):
        result = session.step(i, frames[i])
        assert result.object_ids == [] and not result.labels.any()
    result = session.step(8, frames[8], masks_of(labels[8], [2]))
    assert result.object_ids == [2] and result.memorised
    session.close()
    with pytest.raises(SessionStateError):
        session.remove_objects([2])


def test_batched_steps_equal_single_steps_and_keep_records_exact(engine, clip):
    """Engine.step_many batches the encoder; memorised frames are encoded alone, so a
    session primed from a batched session's record continues identically."""
    frames, labels = clip
    a, b = engine.open_session(SIZE), engine.open_session(SIZE)
    single = engine.open_session(SIZE)
    first = masks_of(labels[0], [1, 2])
    for i in range(12):
        masks = first if i == 0 else None
        out_a, out_b = engine.step_many([(a, i, frames[i], masks), (b, i, frames[i], masks)])
        reference = single.step(i, frames[i], masks)
        assert np.array_equal(out_a.labels, reference.labels)
        assert np.abs(out_b.probabilities - reference.probabilities).max() <= 1e-4
    primed = engine.prime(a.record())
    for i in range(12, 20):
        assert np.array_equal(
            a.step(i, frames[i]).probabilities, primed.step(i, frames[i]).probabilities
        )
