"""Bad Track streams end with the right gRPC status and error code, while a good stream on
the same server goes on with the results it would have alone."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from service.media.masks import encode_indexed_png
from service.rpc.client import SendFrame, TrackClient, result_labels
from service.rpc.client import half_close as send_half_close
from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.gen import segmentation_pb2_grpc as pb_grpc
from service.settings import token_digest
from tests.helpers.stack import GrpcProcess, make_settings
from tests.service.rpc.conftest import stream

pytestmark = pytest.mark.timeout(240)
SMALL = pb.Open(short_side=96)


def _frame(index: int, image: np.ndarray, masks: np.ndarray | None = None) -> pb.TrackRequest:
    message = pb.Frame(index=index, image=pb.Image(rgb=image.tobytes(), width=image.shape[1],
                                                  height=image.shape[0]))  # fmt: skip
    if masks is not None:
        message.masks.indexed_png = encode_indexed_png(masks)
    return pb.TrackRequest(frame=message)


def _rle_masks(labels: np.ndarray, object_id: int) -> pb.Masks:
    rle = mask_utils.encode(np.asfortranarray((labels > 0).astype(np.uint8)))
    entry = {"id": object_id, "segmentation": {"size": rle["size"],
                                               "counts": rle["counts"].decode()}}  # fmt: skip
    return pb.Masks(coco_rle_json=json.dumps([entry]))


async def _call(target: str, requests: list, metadata=(), timeout=None, half_close=True):
    """Send ``requests`` on one Track call; (responses, status code, error code, details).
    The status is the call's own, whether or not the writes got through before it ended.
    Without ``half_close`` (or requests) the client stays silent after its writes."""
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as ch:
        call = pb_grpc.SegmentationStub(ch).Track(metadata=metadata, timeout=timeout)
        responses = []
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            for request in requests:
                await call.write(request)
            if requests and half_close:
                await send_half_close(call)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for response in call:
                responses.append(response)
        code = dict(await call.trailing_metadata() or ()).get("isvos-error-code")
        return responses, await call.code(), code, await call.details()


def _cases(frame, first):
    h, w = frame.shape[:2]
    other = np.zeros((h // 2, w // 2, 3), np.uint8)
    open_ = pb.TrackRequest(open=SMALL)
    start = [open_, _frame(0, frame, first)]
    bad_png = pb.TrackRequest(frame=pb.Frame(index=1, image=pb.Image(png=b"\x89PNG junk")))
    short = pb.Image(rgb=b"\0" * 100, width=w, height=h)
    short_raw = pb.TrackRequest(frame=pb.Frame(index=1, image=short))
    too_big = pb.TrackRequest(
        frame=pb.Frame(index=1, image=pb.Image(rgb=bytes(20 << 20), width=4096, height=1707))
    )  # over the 16 MB message limit
    wrong_masks = pb.TrackRequest(frame=pb.Frame(
        index=1, image=_frame(1, frame).frame.image,
        masks=pb.Masks(indexed_png=encode_indexed_png(first[: h // 2])),
    ))  # fmt: skip
    id0 = pb.TrackRequest(frame=pb.Frame(index=0, image=_frame(0, frame).frame.image,
                                         masks=_rle_masks(first, 0)))  # fmt: skip
    id300 = pb.TrackRequest(frame=pb.Frame(index=0, image=_frame(0, frame).frame.image,
                                           masks=_rle_masks(first, 300)))  # fmt: skip
    jpeg = io.BytesIO()
    Image.fromarray(frame).save(jpeg, format="JPEG")
    return [
        ("a frame before the open", [_frame(0, frame, first)],
         grpc.StatusCode.FAILED_PRECONDITION, "failed_precondition"),
        ("a second open", [*start, open_], grpc.StatusCode.FAILED_PRECONDITION,
         "failed_precondition"),
        ("undecodable image bytes", [*start, bad_png], grpc.StatusCode.INVALID_ARGUMENT,
         "invalid_argument"),
        ("raw bytes of the wrong length", [*start, short_raw], grpc.StatusCode.INVALID_ARGUMENT,
         "invalid_argument"),
        ("a frame of another size", [*start, _frame(1, other)],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("masks of the wrong size", [*start, wrong_masks], grpc.StatusCode.INVALID_ARGUMENT,
         "mask_size_mismatch"),
        ("remove an unknown object", [*start, pb.TrackRequest(remove_objects=pb.RemoveObjects(
            object_ids=[9])), _frame(1, frame)], grpc.StatusCode.INVALID_ARGUMENT,
         "invalid_objects"),
        ("object id 0", [open_, id0], grpc.StatusCode.INVALID_ARGUMENT, "bad_object_id"),
        ("object id over 255", [open_, id300], grpc.StatusCode.INVALID_ARGUMENT,
         "bad_object_id"),
        ("indices going backwards", [*start, _frame(1, frame), _frame(1, frame)],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("a message over the size limit", [*start, too_big], grpc.StatusCode.RESOURCE_EXHAUSTED,
         None),
        ("an unknown resume token", [pb.TrackRequest(open=pb.Open(resume_token="f" * 32))],
         grpc.StatusCode.NOT_FOUND, "not_found"),
        ("a malformed resume token", [pb.TrackRequest(open=pb.Open(resume_token="../x"))],
         grpc.StatusCode.NOT_FOUND, "not_found"),
        ("another config", [pb.TrackRequest(open=pb.Open(config="paper-r50"))],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("a processing size of 8", [pb.TrackRequest(open=pb.Open(short_side=8))],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_size"),
        ("bad memory options", [pb.TrackRequest(open=pb.Open(memory=pb.MemoryOptions(
            max_memory_frames=1)))], grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("an unknown preset", [pb.TrackRequest(open=pb.Open(preset="best"))],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("an empty image", [open_, pb.TrackRequest(frame=pb.Frame(index=0))],
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
        ("an empty request", [*start, pb.TrackRequest()], grpc.StatusCode.INVALID_ARGUMENT,
         "invalid_argument"),
    ]  # fmt: skip


def test_bad_streams_while_a_good_one_goes_on(grpc_server, clip_frames):
    frames, first = clip_frames
    alone, _ = stream(grpc_server.target, frames, {0: first}, open_options=SMALL)

    async def scenario():
        async def good():
            async def gen():
                for i, image in enumerate(frames):
                    yield SendFrame(i, image, first if i == 0 else None)
                    await asyncio.sleep(0.01)  # keep it running through the bad calls

            async with TrackClient(grpc_server.target, open_options=SMALL) as client:
                return [r async for r in client.track(gen())]

        good_task = asyncio.create_task(good())
        outcomes = []
        for name, requests, status, code in _cases(frames[0], first):
            outcomes.append((name, status, code, await _call(grpc_server.target, requests)))
        return outcomes, await good_task

    outcomes, during = asyncio.run(scenario())
    for name, status, code, (_, got_status, got_code, details) in outcomes:
        assert got_status == status, (name, got_status, details)
        assert got_code == code, (name, got_code, details)
        assert details, name
    assert [r.index for r in during] == list(range(72))
    for a, b in zip(during, alone, strict=True):
        np.testing.assert_array_equal(result_labels(a), result_labels(b))


def test_keys_deadlines_and_stream_limits(redis_server, tmp_path, clip_frames):
    frames, first = clip_frames
    settings = make_settings(redis_server.url, tmp_path, grpc={"port": 0, "max_streams": 2},
                             auth={"keys": {"cam": token_digest("cam-token")}})  # fmt: skip
    server = GrpcProcess(settings, tmp_path)
    key = (("authorization", "Bearer cam-token"),)
    start = [pb.TrackRequest(open=SMALL), _frame(0, frames[0], first)]

    opening = []  # calls refused as they start: nothing written that could race the refusal

    async def scenario():
        no_key = await _call(server.target, opening)
        bad_key = await _call(server.target, opening, metadata=(("authorization", "Bearer x"),))
        ok = await _call(server.target, [*start, pb.TrackRequest(close=pb.Close())], key)
        # A deadline that passes while the stream is open ends the call. The client writes only
        # the Open, well inside the deadline, then waits: a write racing the deadline would
        # make grpc's client report its own INTERNAL instead of the call's status.
        slow = await _call(server.target, start[:1], key, timeout=1.5, half_close=False)
        await asyncio.sleep(1.0)  # the server lets go of the expired call
        # Two streams held open (the limit), a third refused.
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = pb_grpc.SegmentationStub(ch)
            held = [stub.Track(metadata=key) for _ in range(2)]
            for call in held:
                await call.write(pb.TrackRequest(open=SMALL))
                await call.read()  # Opened: the stream counts
            third = await _call(server.target, opening, key)
            for call in held:
                call.cancel()
        return no_key, bad_key, ok, slow, third

    try:
        no_key, bad_key, ok, slow, third = asyncio.run(scenario())
    finally:
        server.stop()
    assert no_key[1:3] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"), no_key
    assert bad_key[1:3] == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
    assert ok[1] == grpc.StatusCode.OK and ok[0][-1].WhichOneof("response") == "closed"
    assert slow[1] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [r.WhichOneof("response") for r in slow[0]] == ["opened"], slow[0]
    assert third[1:3] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted"), third
