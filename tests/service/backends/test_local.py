"""The in-process backend: the engine on its own thread, batched across sessions, fenced."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from isvos.processing import masks_from_labels
from service.backends.base import BackendError

pytestmark = pytest.mark.timeout(120)
SIZE = (96, 160)


@pytest.fixture()
def backend(engine):
    from service.backends.local import LocalBackend

    backend = LocalBackend(engine)
    yield backend
    backend.shutdown()


async def _code(awaitable) -> str:
    with pytest.raises(BackendError) as error:
        await awaitable
    return error.value.code


def test_unknown_sessions_and_stale_epochs(backend, clip):
    from service.backends.base import SessionHandle

    frames, labels = clip

    async def scenario():
        ghost = SessionHandle("ghost", "local", SIZE)
        assert await _code(backend.step(ghost, 0, frames[0])) == "not_found"
        assert await _code(backend.remove_objects(ghost, [1])) == "not_found"
        old = await backend.open("s", SIZE, {"max_objects": 2})
        first = await backend.step(old, 0, frames[0], masks_from_labels(labels[0], [1]))
        assert first.memorised and first.header.next_frame_index == 1
        assert await _code(backend.open("s", SIZE)) == "already_exists"
        record = await backend.record(old)
        reserved = (await backend.stats())["reserved_bytes"]
        new = await backend.prime("s", record, epoch=1)
        stats = await backend.stats()
        assert stats["sessions"] == 1 and stats["reserved_bytes"] == reserved
        assert await _code(backend.step(old, 1, frames[1])) == "stale_epoch"
        await backend.close(old)  # a late close of the stale epoch frees nothing
        out = await backend.step(new, 1, frames[1])
        assert out.frame_index == 1 and (out.labels == 1).any()
        await backend.close(new)
        assert (await backend.stats())["sessions"] == 0

    asyncio.run(scenario())


def test_concurrent_sessions_are_batched_and_match_single_steps(backend, engine, clip):
    frames, labels = clip
    variants = [np.roll(frames[:8], 9 * k, axis=2).copy() for k in range(3)]
    variant_labels = [np.roll(labels[:8], 9 * k, axis=2).copy() for k in range(3)]

    async def session(k):
        handle = await backend.open(f"b{k}", SIZE, {"max_objects": 4})
        outs = []
        for i in range(8):
            masks = masks_from_labels(variant_labels[k][0], [1, 2]) if i == 0 else None
            outs.append(await backend.step(handle, i, variants[k][i], masks))
        await backend.close(handle)
        return outs

    async def scenario():
        return await asyncio.gather(*(session(k) for k in range(3)))

    batched = asyncio.run(scenario())
    assert max(backend.batch_sizes) > 1, backend.batch_sizes  # steps shared encoder calls
    for k in range(3):
        alone = engine.open_session(SIZE)
        for i in range(8):
            masks = masks_from_labels(variant_labels[k][0], [1, 2]) if i == 0 else None
            reference = alone.step(i, variants[k][i], masks)
            np.testing.assert_array_equal(batched[k][i].labels, reference.labels)
            assert np.abs(batched[k][i].probabilities - reference.probabilities).max() <= 1e-4


def test_pending_steps_are_bounded(engine, clip):
    from service.backends.local import LocalBackend

    frames, labels = clip
    backend = LocalBackend(engine, max_pending=2)
    seen = []

    async def scenario():
        handles = [await backend.open(f"p{k}", SIZE) for k in range(6)]
        original = backend._run_pending

        def spy():
            with backend._pending_lock:
                seen.append(len(backend._pending))
            original()

        backend._run_pending = spy
        masks = masks_from_labels(labels[0], [1])
        await asyncio.gather(*(backend.step(h, 0, frames[0], masks) for h in handles))

    try:
        asyncio.run(scenario())
    finally:
        backend.shutdown()
    assert seen and max(seen) <= 2
