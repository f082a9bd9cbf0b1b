"""Cross-session batching: concurrent sessions share execute() calls (Oldest strategy) and
get the results they would get alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.service.triton.conftest import assert_same_outputs, run_clip

pytestmark = pytest.mark.timeout(120)

SESSIONS = 4
FRAMES = 10


def _variant(clip, k):
    """Session k's clip: the shared clip shifted sideways (different content per session)."""
    frames, labels = clip[0][:FRAMES], clip[1][:FRAMES]
    return np.roll(frames, 9 * k, axis=2).copy(), np.roll(labels, 9 * k, axis=2).copy()


def _batched_steps(stats_before: dict, stats_after: dict) -> int:
    """execute() calls since ``stats_before`` that stepped more than one session."""
    count = 0
    for size, n in stats_after["step_batch_sizes"].items():
        if int(size) > 1:
            count += n - stats_before["step_batch_sizes"].get(size, 0)
    return count


def test_concurrent_sessions_are_batched_and_match_unbatched(triton_backend, local_backend, clip):
    clips = [_variant(clip, k) for k in range(SESSIONS)]
    barrier = threading.Barrier(SESSIONS, timeout=60)
    batched: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            frames, labels = clips[k]
            handle = triton_backend.open(f"batch-{k}", frames.shape[1:3], {"max_objects": 4})
            outputs = []
            for i in range(FRAMES):
                barrier.wait()  # all sessions send frame i together
                _, [out] = run_clip(triton_backend, "", frames, labels, steps=[i], handle=handle)
                outputs.append(out)
            batched[k] = outputs
            triton_backend.close(handle)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    before = triton_backend.stats()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert not errors, errors
    after = triton_backend.stats()
    assert _batched_steps(before, after) > 0, after["step_batch_sizes"]
    assert after["max_step_batch"] > 1

    # The same sessions one after another (batches of one) through Triton, and locally.
    for k in range(SESSIONS):
        frames, labels = clips[k]
        handle, alone = run_clip(triton_backend, f"alone-{k}", frames, labels)
        triton_backend.close(handle)
        assert_same_outputs(batched[k], alone)
        _, local = run_clip(local_backend, f"local-{k}", frames, labels)
        assert_same_outputs(batched[k], local)


def test_step_many_matches_single_steps_in_fp32(scripted_engine, clip):
    """The batched frame encoder changes nothing beyond 1e-4 (fp32, before the wire)."""
    from isvos.processing import masks_from_labels

    clips = [_variant(clip, k) for k in range(SESSIONS)]
    together = [scripted_engine.open_session((96, 160)) for _ in clips]
    alone = [scripted_engine.open_session((96, 160)) for _ in clips]
    for i in range(FRAMES):
        steps = []
        for k, (frames, labels) in enumerate(clips):
            masks = masks_from_labels(labels[0], [1, 2]) if i == 0 else None
            steps.append((together[k], i, frames[i], masks))
        results = scripted_engine.step_many(steps)
        for k, (_session, index, image, masks) in enumerate(steps):
            single = alone[k].step(index, image, masks)
            assert not isinstance(results[k], Exception), results[k]
            np.testing.assert_array_equal(results[k].labels, single.labels)
            np.testing.assert_allclose(results[k].probabilities, single.probabilities, atol=1e-4)
