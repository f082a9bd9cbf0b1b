"""The asyncio client: unary calls, and a pipelined stream that survives a lost session."""

from __future__ import annotations

import asyncio

import pytest

from isvos.processing import masks_from_labels
from service import triton_contract as C
from tests.service.triton.conftest import assert_same_outputs, run_clip

pytestmark = pytest.mark.timeout(120)


async def _frames(frames, labels, indices, add_at=None):
    for i in indices:
        masks = None
        if i == 0:
            masks = masks_from_labels(labels[0], [1] if add_at else [1, 2])
        elif i == add_at:
            masks = masks_from_labels(labels[i], [2])
        yield i, frames[i], masks


def test_stream_matches_sync_and_recovers(triton_server, triton_backend, local_backend, clip):
    from service.backends.triton import AsyncTritonBackend

    frames, labels = clip[0][:24], clip[1][:24]
    _, reference = run_clip(local_backend, "aio-ref", frames, labels, add_at=6)

    async def scenario():
        async with AsyncTritonBackend(triton_server.url, retry_unavailable_s=5) as backend:
            handle = await backend.open("aio", frames.shape[1:3], {"max_objects": 4})
            first = [o async for o in backend.stream(handle, _frames(frames, labels, range(12), 6))]
            assert backend.counters["stream_fallbacks"] == 0
            # The server loses the session (as after a restart): END it behind our back.
            triton_backend._infer(C.CLOSE, {}, C.correlation_id("aio", 0), end=True)
            rest = [
                o async for o in backend.stream(handle, _frames(frames, labels, range(12, 24), 6))
            ]
            assert handle.epoch == 1 and backend.counters["primes"] == 1
            assert backend.counters["stream_fallbacks"] >= 1
            unary = await backend.step(handle, 23, frames[23])  # a repeat: cached
            stats = await backend.stats()
            await backend.close(handle)
            return first + rest, unary, stats

    outputs, unary, stats = asyncio.run(scenario())
    assert_same_outputs(outputs, reference)
    assert_same_outputs([unary], [reference[-1]])
    assert stats["re_primes"] >= 1


def test_async_prime_and_record_continue_identically(triton_server, triton_backend, clip):
    from service.backends.base import BackendError
    from service.backends.triton import AsyncTritonBackend

    frames, labels = clip[0][:16], clip[1][:16]
    handle, full = run_clip(triton_backend, "aio-prime-src", frames, labels)
    triton_backend.close(handle)

    async def scenario():
        async with AsyncTritonBackend(triton_server.url, retry_unavailable_s=5) as backend:
            handle = await backend.open("aio-prime-a", frames.shape[1:3])
            with pytest.raises(BackendError, match="already open"):
                await backend.open("aio-prime-a", frames.shape[1:3])
            first = [o async for o in backend.stream(handle, _frames(frames, labels, range(9)))]
            record = await backend.record(handle)
            await backend.close(handle)
            primed = await backend.prime("aio-prime-b", record, epoch=2)
            assert primed.epoch == 2 and primed.processing_size == tuple(frames.shape[1:3])
            rest = [await backend.step(primed, i, frames[i]) for i in range(9, 16)]
            await backend.close(primed)
            with pytest.raises(BackendError) as refused:
                await backend.prime("aio-prime-c", b"not a record")
            return first + rest, refused.value.code

    outputs, code = asyncio.run(scenario())
    assert_same_outputs(outputs, full)
    assert code == C.INVALID_ARGUMENT
