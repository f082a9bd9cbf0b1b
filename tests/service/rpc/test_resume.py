"""A stream survives a cut connection, a killed and restarted server, and a move to another
server replica: the client resumes with its token and gets the results of an unbroken
stream, each frame once."""

from __future__ import annotations

import asyncio
import signal
import threading

import numpy as np
import pytest

from service.rpc.client import SendFrame, TrackClient, result_labels
from service.rpc.gen import segmentation_pb2 as pb
from tests.helpers.proxy import CuttableProxy
from tests.helpers.stack import GrpcProcess, make_settings
from tests.service.rpc.conftest import stream

pytestmark = pytest.mark.timeout(240)
SMALL = pb.Open(short_side=96, memory=pb.MemoryOptions(mem_every=4))


def _stream_with(target: str, frames, first, on_index):
    """Stream through ``target``; ``on_index(i)`` runs before frame i is sent."""

    async def gen():
        for i, image in enumerate(frames):
            await on_index(i)
            yield SendFrame(i, image, first if i == 0 else None)

    async def run():
        async with TrackClient(target, open_options=SMALL, reconnect_s=60) as client:
            return [r async for r in client.track(gen())], client.reconnects

    return asyncio.run(run())


@pytest.fixture(scope="module")
def reference(grpc_server, clip_frames):
    frames, first = clip_frames
    results, _ = stream(grpc_server.target, frames, {0: first}, open_options=SMALL)
    return {r.index: result_labels(r) for r in results}


def _assert_identical(results, reference):
    assert [r.index for r in results] == list(range(72))  # every frame once, in order
    for r in results:
        np.testing.assert_array_equal(result_labels(r), reference[r.index], f"frame {r.index}")


def test_a_cut_connection_resumes_identically(grpc_server, clip_frames, reference):
    frames, first = clip_frames
    proxy = CuttableProxy(grpc_server.target)

    async def cut(i):
        if i in (25, 50):
            proxy.cut()
            await asyncio.sleep(0.2)

    try:
        results, reconnects = _stream_with(proxy.url, frames, first, cut)
    finally:
        proxy.close()
    assert reconnects >= 1
    _assert_identical(results, reference)


def test_a_killed_server_restarted_resumes_identically(
    redis_server, tmp_path, clip_frames, reference
):
    frames, first = clip_frames
    server = GrpcProcess(make_settings(redis_server.url, tmp_path, grpc={"port": 0}), tmp_path)

    async def kill(i):
        if i == 30:
            server.kill()  # SIGKILL: no goodbye, only the periodic record survives
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)  # the same port

    try:
        results, reconnects = _stream_with(server.target, frames, first, kill)
    finally:
        server.stop()
    assert reconnects >= 1 and '"stream_resumed"' in server.log()
    _assert_identical(results, reference)


def test_another_replica_takes_over(redis_server, tmp_path, clip_frames, reference):
    frames, first = clip_frames
    settings = make_settings(redis_server.url, tmp_path, grpc={"port": 0})
    a = GrpcProcess(settings, tmp_path, "a")
    b = GrpcProcess(settings, tmp_path, "b")
    proxy = CuttableProxy(a.target)  # the address clients know (a load balancer's)

    async def fail_over(i):
        if i == 40:
            a.process.send_signal(signal.SIGKILL)
            proxy.retarget(b.target)

    try:
        results, reconnects = _stream_with(proxy.url, frames, first, fail_over)
    finally:
        proxy.close()
        a.stop()
        b.stop()
    assert reconnects >= 1 and '"stream_resumed"' in b.log()
    _assert_identical(results, reference)


def test_a_close_whose_answer_was_lost_is_answered_again(grpc_server, clip_frames):
    """The connection breaks after the client's close, before it got ``Closed`` (and its
    last results): resuming gives those results and ``Closed`` again, not an unknown token."""
    import grpc

    from service.rpc.client import SendFrame, frame_request
    from service.rpc.gen import segmentation_pb2_grpc as pb_grpc

    frames, first = clip_frames
    count = 10

    async def call(requests):
        async with grpc.aio.insecure_channel(grpc_server.target) as channel:
            stub = pb_grpc.SegmentationStub(channel)
            return [reply async for reply in stub.Track(iter(requests))]

    requests = [pb.TrackRequest(open=SMALL)]
    for i in range(count):
        requests += frame_request(SendFrame(i, frames[i], first if i == 0 else None))
    requests.append(pb.TrackRequest(close=pb.Close()))
    whole = asyncio.run(call(requests))
    token = whole[0].opened.resume_token
    results = [r.result for r in whole if r.WhichOneof("response") == "result"]
    assert [r.index for r in results] == list(range(count))
    assert whole[-1].closed.frames == count

    resume = pb.Open(resume_token=token, last_received_index=count - 3)
    again = asyncio.run(call([pb.TrackRequest(open=resume), pb.TrackRequest(close=pb.Close())]))
    kinds = [r.WhichOneof("response") for r in again]
    assert kinds == ["opened", "result", "result", "closed"], kinds
    assert again[0].opened.resume_after_index == count - 1  # nothing to send again
    assert [r.result.index for r in again[1:3]] == [count - 2, count - 1]
    for got in again[1:3]:
        np.testing.assert_array_equal(result_labels(got.result),
                                      result_labels(results[got.result.index]))  # fmt: skip
    assert again[-1].closed.frames == count
    # A frame after the close is refused with a status, not taken for a new stream.
    with pytest.raises(grpc.aio.AioRpcError) as late:
        asyncio.run(call([pb.TrackRequest(open=resume),
                          *frame_request(SendFrame(count, frames[count]))]))  # fmt: skip
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_redis_restart_mid_stream_resumes_identically(tmp_path, clip_frames, reference):
    """Redis goes away while a stream runs: the stream ends UNAVAILABLE (not an internal
    error), the client resumes once Redis is back, the results are an unbroken stream's."""
    from service.redis_server import start_redis

    redis = start_redis(tmp_path / "redis", appendfsync="always")
    frames, first = clip_frames
    server = GrpcProcess(make_settings(redis.url, tmp_path, grpc={"port": 0}), tmp_path)

    later = threading.Timer(2.0, redis.start_again)  # frames keep coming while it is down

    async def restart_redis(i):
        if i == 30:
            redis.stop()
            later.start()
        await asyncio.sleep(0.02)

    try:
        results, reconnects = _stream_with(server.target, frames, first, restart_redis)
    finally:
        later.join()
        server.stop()
        redis.stop()
    assert reconnects >= 1
    assert '"stream_store_unavailable"' in server.log() and '"level": "error"' not in server.log()
    _assert_identical(results, reference)


def test_session_calls_answer_unavailable_while_redis_is_down(tmp_path, clip_frames):
    """GetSession and CloseSession while Redis is away answer UNAVAILABLE with the error
    code (not an internal error); once it is back the session is there, then closed."""
    import grpc

    from service.redis_server import start_redis
    from service.rpc.gen import segmentation_pb2_grpc as pb_grpc

    redis = start_redis(tmp_path / "redis", appendfsync="always")
    frames, first = clip_frames
    server = GrpcProcess(make_settings(redis.url, tmp_path, grpc={"port": 0}), tmp_path)

    async def session_call(name: str, session_id: str):
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = pb_grpc.SegmentationStub(channel)
            request = pb.GetSessionRequest if name == "GetSession" else pb.CloseSessionRequest
            try:
                return await getattr(stub, name)(request(session_id=session_id), timeout=20)
            except grpc.aio.AioRpcError as exc:
                code = dict(exc.trailing_metadata() or ()).get("isvos-error-code")
                return exc.code(), code

    async def open_and_leave():  # a stream that ends without a close: the session stays
        async def gen():
            for i in range(6):
                yield SendFrame(i, frames[i], first if i == 0 else None)

        async with TrackClient(server.target, open_options=SMALL) as client:
            results = [r async for r in client.track(gen(), close=False)]
            return client.session_id, len(results)

    try:
        session_id, count = asyncio.run(open_and_leave())
        redis.stop()
        down = [asyncio.run(session_call(n, session_id)) for n in ("GetSession", "CloseSession")]
        redis.start_again()
        back = asyncio.run(session_call("GetSession", session_id))
        closed = asyncio.run(session_call("CloseSession", session_id))
        gone = asyncio.run(session_call("GetSession", session_id))
    finally:
        server.stop()
        redis.stop()
    unavailable = (grpc.StatusCode.UNAVAILABLE, "unavailable")
    assert down == [unavailable, unavailable], down
    assert count == 6 and back.session_id == session_id and not back.live, back
    assert closed.closed
    assert gone == (grpc.StatusCode.NOT_FOUND, "not_found"), gone
    assert '"level": "error"' not in server.log()


def test_a_resume_while_the_earlier_connection_is_still_served(grpc_server, clip_frames,
                                                               reference):  # fmt: skip
    """The client comes back on a new connection while the server still serves the old one
    (a half-open socket): the old call is ended, the resume goes on, results identical."""
    import grpc

    from service.rpc.client import SendFrame, frame_request
    from service.rpc.gen import segmentation_pb2_grpc as pb_grpc

    frames, first = clip_frames

    async def run():
        async with grpc.aio.insecure_channel(grpc_server.target) as old_channel, \
                grpc.aio.insecure_channel(grpc_server.target) as new_channel:  # fmt: skip
            old = pb_grpc.SegmentationStub(old_channel).Track()
            await old.write(pb.TrackRequest(open=SMALL))
            token = (await old.read()).opened.resume_token
            got = []
            for i in range(10):
                for request in frame_request(SendFrame(i, frames[i], first if i == 0 else None)):
                    await old.write(request)
                got.append((await old.read()).result)
            # The old call stays open (never closed, never cancelled by the client).
            new = pb_grpc.SegmentationStub(new_channel).Track()
            await new.write(pb.TrackRequest(open=pb.Open(resume_token=token,
                                                         last_received_index=9)))  # fmt: skip
            opened = (await new.read()).opened
            for i in range(opened.resume_after_index + 1, 20):
                for request in frame_request(SendFrame(i, frames[i])):
                    await new.write(request)
            await new.write(pb.TrackRequest(close=pb.Close()))
            while (reply := await new.read()) is not grpc.aio.EOF:
                if reply.WhichOneof("response") == "result" and reply.result.index > 9:
                    got.append(reply.result)
            old.cancel()  # (a half-open socket's client is gone; nothing comes on it)
            return got

    results = asyncio.run(asyncio.wait_for(run(), 120))
    assert '"stream_superseded"' in grpc_server.log()  # the server ended the earlier call
    assert [r.index for r in results] == list(range(20))
    for r in results:
        np.testing.assert_array_equal(result_labels(r), reference[r.index], f"frame {r.index}")
