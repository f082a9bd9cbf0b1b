"""Hypothesis-generated Track streams (any order of requests, random bytes for images and
masks, extreme sizes and indices) against the real server: every stream ends with a status
before its deadline, never INTERNAL or UNKNOWN; a good stream afterwards has its results."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.gen import segmentation_pb2_grpc as pb_grpc
from tests.helpers.stack import GrpcProcess, make_settings
from tests.service.rpc.conftest import stream
from tests.service.rpc.test_bad_input import _call

pytestmark = pytest.mark.timeout(600)
DEADLINE_S = 20.0
SIDE = st.integers(-4, 70_000)
INT64 = st.integers(-(2**63), 2**63 - 1)
# Text that protobuf can carry (strings are UTF-8: no lone surrogates).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def _image():
    return st.one_of(
        st.builds(lambda b: pb.Image(jpeg=b), st.binary(max_size=256)),
        st.builds(lambda b: pb.Image(png=b), st.binary(max_size=256)),
        st.builds(lambda b, w, h: pb.Image(rgb=b, width=w, height=h),
                  st.binary(max_size=4096), SIDE, SIDE),
        st.builds(lambda w, h: pb.Image(rgb=bytes(max(0, w * h * 3) % (1 << 20)), width=w,
                                        height=h), st.integers(0, 300), st.integers(0, 300)),
        st.builds(lambda b, w, h: pb.Image(i420=b, width=w, height=h),
                  st.binary(max_size=4096), SIDE, SIDE),
        st.just(pb.Image()),
    )  # fmt: skip


def _masks():
    return st.one_of(
        st.none(),
        st.builds(lambda b: pb.Masks(indexed_png=b), st.binary(max_size=256)),
        st.builds(lambda t: pb.Masks(coco_rle_json=t), TEXT),
        st.just(pb.Masks(coco_rle_json='[{"id": 1, "segmentation": {"size": [100000, 100000], '
                                       '"counts": [0, 10000000000]}}]')),
    )  # fmt: skip


def _request():
    open_ = st.builds(
        lambda side, every, k, objects, policy, fmt, token, last: pb.TrackRequest(open=pb.Open(
            short_side=side, memory=pb.MemoryOptions(mem_every=every, top_k=k,
                                                     max_objects=objects),
            policy=policy, mask_format=fmt, resume_token=token, last_received_index=last)),
        st.sampled_from([0, 96, -1, 8, 100_000]), st.integers(-2, 2000),
        st.integers(-2, 100_000), st.integers(-2, 1000), st.integers(0, 5), st.integers(0, 5),
        TEXT, INT64,
    )  # fmt: skip
    frame = st.builds(
        lambda index, image, masks: pb.TrackRequest(frame=pb.Frame(
            index=index, image=image, masks=masks)),
        st.one_of(st.integers(-2, 5), INT64), _image(), _masks(),
    )  # fmt: skip
    remove = st.builds(lambda ids: pb.TrackRequest(remove_objects=pb.RemoveObjects(object_ids=ids)),
                       st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5))  # fmt: skip
    close = st.just(pb.TrackRequest(close=pb.Close()))
    return st.one_of(open_, frame, remove, close, st.just(pb.TrackRequest()))


async def _send_all(target: str, requests: list, timeout: float):
    """Send ``requests`` as the call's request iterator (gRPC stops taking them once the
    server ends the call, so the status read is the server's); (status, error code, details)."""

    async def messages():
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.SegmentationStub(channel).Track(messages(), timeout=timeout)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                pass
        code = dict(await call.trailing_metadata() or ()).get("isvos-error-code")
        return await call.code(), code, await call.details()


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(requests=st.lists(_request(), min_size=0, max_size=6))
def _fuzz_one(target, requests):
    status, code, details = asyncio.run(_send_all(target, requests, DEADLINE_S))
    # The client's own transport error: the server ended the call (with its status) while
    # the client was still sending, and grpc's client core reports INTERNAL instead. The
    # server's side is checked in its log (no internal error, no traceback).
    lost = status == grpc.StatusCode.INTERNAL and code is None and "from Core" in details
    assert lost or status not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.UNKNOWN), (status, details, requests)  # fmt: skip


def test_generated_streams_end_with_a_status_and_the_server_keeps_serving(grpc_server, clip_frames):
    _fuzz_one(grpc_server.target)
    log = grpc_server.log()
    assert "Traceback" not in log and '"internal_error"' not in log, log[-3000:]
    frames, labels = clip_frames
    results, _ = stream(grpc_server.target, frames[:8], {0: labels},
                        open_options=pb.Open(short_side=96))  # fmt: skip
    assert [r.index for r in results] == list(range(8))


def test_a_silent_stream_ends_with_request_timeout(redis_server, tmp_path):
    settings = make_settings(redis_server.url, tmp_path, grpc={"port": 0, "open_timeout_s": 1.0,
                                                               "idle_timeout_s": 1.0})  # fmt: skip
    server = GrpcProcess(settings, tmp_path)
    try:
        started = time.monotonic()
        _, status, code, _ = asyncio.run(_call(server.target, [], timeout=DEADLINE_S))
        assert (status, code) == (grpc.StatusCode.DEADLINE_EXCEEDED, "request_timeout")
        assert time.monotonic() - started < 5
        opened = [pb.TrackRequest(open=pb.Open(short_side=96))]  # then silence
        _, status, code, _ = asyncio.run(
            _call(server.target, opened, timeout=DEADLINE_S, half_close=False)
        )
        assert (status, code) == (grpc.StatusCode.DEADLINE_EXCEEDED, "request_timeout")
    finally:
        server.stop()
