"""Track streams against a real gRPC server process: identical to `isvos segment`, objects
added, corrected and removed mid-stream, the latest policy, health and reflection."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from service.rpc.client import result_labels
from service.rpc.gen import segmentation_pb2 as pb
from tests.conftest import iou
from tests.service.rpc.conftest import gt, segment_reference, stream

pytestmark = pytest.mark.timeout(180)
SMALL = pb.Open(short_side=96)


def test_every_frame_matches_isvos_segment_with_an_object_added(
    grpc_server, clip_frames, example_clip, tmp_path
):
    frames, first = clip_frames
    prompts = {0: np.where(first == 1, 1, 0).astype(np.uint8),
               10: np.where(gt(10) == 2, 2, 0).astype(np.uint8)}  # fmt: skip
    results, client = stream(grpc_server.target, frames, prompts, open_options=SMALL)
    assert [r.index for r in results] == list(range(72)) and client.reconnects == 0
    assert all(r.step_ms > 0 and r.received_time_us <= r.sent_time_us for r in results)
    reference = segment_reference(example_clip[0], prompts, tmp_path)
    for r in results:
        expected = np.array(Image.open(reference / f"{r.index:05d}.png"))
        np.testing.assert_array_equal(result_labels(r), expected, err_msg=f"frame {r.index}")
    assert {o.object_id for o in results[5].objects} == {1}
    assert {o.object_id for o in results[20].objects} == {1, 2}


def test_a_correction_and_a_removal_mid_stream(grpc_server, clip_frames):
    frames, first = clip_frames
    corrected = np.where(gt(30) == 1, 1, 0).astype(np.uint8)
    corrected[:, :40] = 0  # a correction that differs from the prediction
    prompts = {0: first, 30: corrected}
    results, _ = stream(grpc_server.target, frames, prompts, open_options=SMALL,
                        remove={50: (2,)})  # fmt: skip
    at = {r.index: result_labels(r) for r in results}
    # The corrected frame shows the user's mask (resized to processing size and back).
    assert iou(at[30] == 1, corrected == 1) > 0.9 and not (at[30][:, :40] == 1).any()
    assert all((at[i] == 2).any() for i in range(40, 50))
    assert all(not (at[i] == 2).any() for i in range(50, 72))  # removed from frame 50
    assert all((at[i] == 1).any() for i in range(50, 72))


def test_latest_policy_drops_frames_and_keeps_latency_bounded(grpc_server, clip_frames):
    """Frames sent far faster than the server steps them (at 480p): the server keeps only
    the newest, reports what it dropped, and each result's wait stays short."""
    frames, first = clip_frames
    many = frames * 4  # 288 frames, sent as fast as the connection takes them
    latest = pb.Open(short_side=480, policy=pb.BACKPRESSURE_POLICY_LATEST)
    results, _ = stream(grpc_server.target, many, {0: first}, open_options=latest)
    dropped = sum(len(r.dropped_indices) for r in results)
    indices = [r.index for r in results] + [i for r in results for i in r.dropped_indices]
    assert dropped > 0 and sorted(indices) == list(range(len(indices)))  # each frame once
    assert len(indices) >= len(many) - 2  # the last frames may be neither
    waits = sorted((r.sent_time_us - r.received_time_us) / 1e3 for r in results)
    steps = sorted(r.step_ms for r in results)
    # Waiting time is about one step (the frame in progress), never a growing queue.
    assert waits[int(len(waits) * 0.9)] < 6 * steps[len(steps) // 2] + 50, (waits[-5:], steps)


def test_health_and_reflection_answer(grpc_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def check():
        async with grpc.aio.insecure_channel(grpc_server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            ours = await health.Check(health_pb2.HealthCheckRequest(
                service="isvos.v1.Segmentation"))  # fmt: skip
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
            names = {s.name for s in replies[0].list_services_response.service}
            # What `grpcurl describe` does next: the file that defines the service.
            describe = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="isvos.v1.Segmentation")  # fmt: skip
            files = [r async for r in stub.ServerReflectionInfo(iter([describe]))]
            return overall.status, ours.status, names, files[0]

    overall, ours, names, file_reply = asyncio.run(check())
    assert overall == ours == 1  # SERVING
    assert {"isvos.v1.Segmentation", "grpc.health.v1.Health"} <= names
    assert file_reply.file_descriptor_response.file_descriptor_proto


def test_get_and_close_session(grpc_server, clip_frames):
    from service.rpc.gen import segmentation_pb2_grpc as pb_grpc

    frames, first = clip_frames
    results, client = stream(grpc_server.target, frames[:8], {0: first}, open_options=SMALL)
    assert len(results) == 8

    async def calls():
        async with grpc.aio.insecure_channel(grpc_server.target) as channel:
            stub = pb_grpc.SegmentationStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                # A stream ended with Close is no session any more.
                await stub.GetSession(pb.GetSessionRequest(session_id=client.session_id))
            return gone.value.code()

    assert asyncio.run(calls()) == grpc.StatusCode.NOT_FOUND
    started = time.monotonic()
    assert time.monotonic() - started < 5


def test_a_client_that_waits_for_each_result_before_the_next_frame(grpc_server, clip_frames):
    """One frame in flight at a time: the server hands each result on without waiting for
    the next frame (a pipelined engine must not hold results back)."""
    from service.rpc.client import SendFrame, TrackClient

    frames, first = clip_frames
    turn = None

    async def run():
        nonlocal turn
        turn = asyncio.Event()
        turn.set()

        async def gen():
            for i, image in enumerate(frames[:20]):
                await asyncio.wait_for(turn.wait(), 10)
                turn.clear()
                yield SendFrame(i, image, first if i == 0 else None)

        async with TrackClient(grpc_server.target, open_options=SMALL) as client:
            out = []
            async for result in client.track(gen()):
                out.append(result.index)
                turn.set()
            return out

    assert asyncio.run(asyncio.wait_for(run(), 60)) == list(range(20))
