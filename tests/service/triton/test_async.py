"""The asyncio client: unary calls, and a pipelined stream that survives a lost session, a
cut transport and repeated frames."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from isvos import triton_contract as C
from isvos.limits import REPLAY_WINDOW
from isvos.processing import masks_from_labels
from service.backends.base import BackendError
from tests.helpers.proxy import CuttableProxy
from tests.service.triton.conftest import assert_same_outputs, raw, run_clip

pytestmark = pytest.mark.timeout(120)


async def _frames(frames, labels, indices, add_at=None, on_yield=None):
    for i in indices:
        masks = None
        if i == 0:
            masks = masks_from_labels(labels[0], [1] if add_at else [1, 2])
        elif i == add_at:
            masks = masks_from_labels(labels[i], [2])
        if on_yield is not None:
            on_yield(i)
        yield i, frames[i], masks


def _backend(url):
    from service.backends.triton import TritonBackend

    return TritonBackend(url, retry_unavailable_s=10)


def test_stream_matches_sync_and_recovers(triton_server, triton_backend, local_backend, clip):
    frames, labels = clip[0][:24], clip[1][:24]
    _, reference = run_clip(local_backend, "aio-ref", frames, labels, add_at=6)

    async def scenario():
        async with _backend(triton_server.url) as backend:
            handle = await backend.open("aio", frames.shape[1:3], {"max_objects": 4})
            first = [o async for o in backend.stream(handle, _frames(frames, labels, range(12), 6))]
            assert backend.counters["stream_fallbacks"] == 0
            # The server loses the session (as after a restart): END it behind our back.
            raw(triton_backend, C.CLOSE, C.correlation_id("aio", 0), end=True)
            rest = [
                o async for o in backend.stream(handle, _frames(frames, labels, range(12, 24), 6))
            ]
            assert handle.epoch == 1 and backend.counters["primes"] == 1
            assert backend.counters["stream_fallbacks"] >= 1
            unary = await backend.step(handle, 23, frames[23])  # a repeat: cached
            assert unary.replayed
            stats = await backend.stats()
            await backend.close(handle)
            return first + rest, unary, stats

    outputs, unary, stats = asyncio.run(scenario())
    assert_same_outputs(outputs, reference)
    assert_same_outputs([unary], [reference[-1]])
    assert stats["re_primes"] >= 1


def test_transport_cut_mid_stream_recovers_identically(triton_server, local_backend, clip):
    """A TCP proxy between client and server drops the connection while frames are in
    flight; the stream falls back to unary steps (replayed where the server had answered)
    and resumes on a new stream, with the labels of an unbroken run. Triton may drop the
    sequence of a cancelled stream: then the client re-primes (one epoch per cut at most)
    and the model frees the stale epoch at once."""
    frames, labels = clip[0][:24], clip[1][:24]
    _, reference = run_clip(local_backend, "cut-ref", frames, labels, add_at=6)
    proxy = CuttableProxy(triton_server.url)

    def cut_at(index):
        if index in (9, 17):
            proxy.cut()

    async def scenario():
        async with _backend(proxy.url) as backend:
            handle = await backend.open("cut", frames.shape[1:3], {"max_objects": 4})
            source = _frames(frames, labels, range(24), 6, on_yield=cut_at)
            outputs = [o async for o in backend.stream(handle, source, window=3)]
            counters = dict(backend.counters)
            live = [s for s in (await backend.stats())["session_list"]
                    if s["id"].startswith("cut:")]  # fmt: skip
            await backend.close(handle)
            return outputs, counters, handle.epoch, live

    try:
        outputs, counters, epoch, live = asyncio.run(scenario())
    finally:
        proxy.close()
    assert proxy.cuts >= 2 and counters["stream_fallbacks"] >= 2
    assert epoch == counters.get("primes", 0) <= 2, counters
    assert [s["id"] for s in live] == [f"cut:{epoch}"]  # no stale epoch holds memory
    assert [o.frame_index for o in outputs] == list(range(24))
    assert_same_outputs(outputs, reference)


def test_recent_frames_are_replayed_and_older_ones_are_gaps(triton_server, clip):
    frames, labels = clip[0][:20], clip[1][:20]

    async def scenario():
        async with _backend(triton_server.url) as backend:
            handle = await backend.open("replay", frames.shape[1:3], {"max_objects": 4})
            first = [o async for o in backend.stream(handle, _frames(frames, labels, range(20)))]
            again = [await backend.step(handle, i, frames[i])
                     for i in range(20 - REPLAY_WINDOW, 20)]  # fmt: skip
            with pytest.raises(BackendError) as gap:
                await backend.step(handle, 20 - REPLAY_WINDOW - 1, frames[0])
            await backend.close(handle)
            return first, again, gap.value.code

    first, again, code = asyncio.run(scenario())
    assert all(o.replayed for o in again)
    for a, b in zip(first[-REPLAY_WINDOW:], again, strict=True):
        assert a.frame_index == b.frame_index
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert code == "frame_gap"


def test_concurrent_failures_recover_once(triton_server, triton_backend, clip):
    """Two calls on one lost session (a frame and its retry) fail together; the session is
    primed once and the second answer is a replay."""
    frames, labels = clip[0][:12], clip[1][:12]

    async def scenario():
        async with _backend(triton_server.url) as backend:
            handle = await backend.open("twice", frames.shape[1:3], {"max_objects": 4})
            [o async for o in backend.stream(handle, _frames(frames, labels, range(10)))]
            raw(triton_backend, C.CLOSE, C.correlation_id("twice", 0), end=True)
            a, b = await asyncio.gather(
                backend.step(handle, 10, frames[10]), backend.step(handle, 10, frames[10])
            )
            counters = dict(backend.counters)
            await backend.close(handle)
            return a, b, counters, handle.epoch

    a, b, counters, epoch = asyncio.run(scenario())
    assert epoch == 1 and counters["primes"] == 1
    assert (a.frame_index, b.frame_index) == (10, 10) and a.replayed != b.replayed
    np.testing.assert_array_equal(a.labels, b.labels)


def test_async_prime_and_record_continue_identically(triton_server, triton_backend, clip):
    frames, labels = clip[0][:16], clip[1][:16]
    handle, full = run_clip(triton_backend, "aio-prime-src", frames, labels)
    triton_backend.close(handle)

    async def scenario():
        async with _backend(triton_server.url) as backend:
            handle = await backend.open("aio-prime-a", frames.shape[1:3])
            with pytest.raises(BackendError, match="already open"):
                await backend.open("aio-prime-a", frames.shape[1:3])
            first = [o async for o in backend.stream(handle, _frames(frames, labels, range(9)))]
            record = await backend.record(handle)
            await backend.close(handle)
            primed = await backend.prime("aio-prime-b", record.to_bytes(), epoch=2)
            assert primed.epoch == 2 and primed.processing_size == tuple(frames.shape[1:3])
            rest = [await backend.step(primed, i, frames[i]) for i in range(9, 16)]
            await backend.close(primed)
            with pytest.raises(BackendError) as refused:
                await backend.prime("aio-prime-c", b"not a record")
            return first + rest, refused.value.code

    outputs, code = asyncio.run(scenario())
    assert_same_outputs(outputs, full)
    assert code == "invalid_record"
