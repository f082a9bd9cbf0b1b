"""The deployed topology as processes (``isvos stack``): Redis, two Triton servers, the
gateway, the gRPC server and two workers, each started as its image starts it. A job over
HTTP and a stream over gRPC equal ``isvos segment``; a drained server gets no new sessions;
the server holding a job's and a stream's sessions killed mid-way: both finish on the other
with identical masks and one re-prime each."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from service.keys import Keys
from service.rpc.client import result_labels
from service.rpc.gen import segmentation_pb2 as pb
from service.settings import RedisSettings
from service.stack import LocalStack, StackOptions
from tests.conftest import REPO, TINY_CHECKPOINT
from tests.helpers.stack import submit, wait_for
from tests.service.rpc.conftest import stream
from tests.service.triton.conftest import segment_reference

pytestmark = pytest.mark.timeout(600)


def _options(repo, data_dir, workers: int = 2) -> StackOptions:
    return StackOptions(
        data_dir=data_dir, tritons=2, workers=workers, http_port=0, grpc_port=0,
        model_repo=repo, config="tiny", checkpoint=str(TINY_CHECKPOINT), device="cpu",
        triton_params={"torch_threads": "1"}, env={"ISVOS_JOBS__LEASE_S": "5"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def local_stack(triton_repo, tmp_path_factory):
    with LocalStack(_options(triton_repo, tmp_path_factory.mktemp("stack"))) as running:
        yield running


def _job_hash(stack: LocalStack, job_id: str) -> dict[str, str]:
    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        return client.hgetall(Keys(RedisSettings().key_prefix).job(job_id))
    finally:
        client.close()


def _zip_masks(http: httpx.Client, job_id: str) -> dict[int, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(http.get(f"/v1/jobs/{job_id}/result").content)) as archive:
        return {int(name[-9:-4]): np.array(Image.open(io.BytesIO(archive.read(name))))
                for name in archive.namelist()}  # fmt: skip


def _reference(folder) -> dict[int, np.ndarray]:
    return {int(p.stem): np.array(Image.open(p)) for p in sorted((folder / "masks").iterdir())}


def _assert_same(got: dict[int, np.ndarray], want: dict[int, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for index in want:
        np.testing.assert_array_equal(got[index], want[index], err_msg=f"frame {index}")


def _probe(triton) -> int:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "triton-probe", "--http-url", triton.http_url,
         "--url", triton.url, "--drain-file", triton.drain_file],
        cwd=REPO, capture_output=True, timeout=60,
    ).returncode  # fmt: skip


def test_a_job_and_a_stream_on_the_stack_equal_segment(local_stack, example_clip, tmp_path):
    from service.media.video import iter_frames

    video, masks = example_clip
    segment_reference(video, masks, tmp_path / "ref", local_stack.tritons[0].url)
    want = _reference(tmp_path / "ref")
    with httpx.Client(base_url=local_stack.http_url, timeout=60) as http:
        job_id = submit(http, video, [masks], {"size": 96, "outputs": ["png_zip"]}).json()["id"]
        assert wait_for(http, job_id, timeout=180)["status"] == "succeeded"
        _assert_same(_zip_masks(http, job_id), want)
    assert _job_hash(local_stack, job_id)["endpoint"] in [t.url for t in local_stack.tritons]
    frames = [f.image for f in iter_frames(video)]
    results, _ = stream(local_stack.grpc_target, frames, {0: np.array(Image.open(masks))},
                        open_options=pb.Open(short_side=96))  # fmt: skip
    _assert_same({r.index: result_labels(r) for r in results}, want)


def test_a_drained_server_gets_no_new_sessions(local_stack, example_clip):
    video, masks = example_clip
    draining, other = local_stack.tritons
    assert _probe(draining) == 0
    draining.drain()
    try:
        assert _probe(draining) == 1 and _probe(other) == 0
        time.sleep(1.5)  # placement caches a server's stats for a second
        with httpx.Client(base_url=local_stack.http_url, timeout=60) as http:
            ids = [submit(http, video, [masks], {"size": 96, "outputs": []}).json()["id"]
                   for _ in range(3)]  # fmt: skip
            for job_id in ids:
                assert wait_for(http, job_id, timeout=180)["status"] == "succeeded"
        assert [_job_hash(local_stack, i)["endpoint"] for i in ids] == [other.url] * 3
    finally:
        draining.drain(False)
    assert _probe(draining) == 0


@pytest.mark.slow
def test_the_server_holding_a_job_and_a_stream_killed(triton_repo, long_clip, tmp_path):
    from service.media.video import iter_frames

    video, masks = long_clip
    frames = [f.image for f in iter_frames(video)]
    with LocalStack(_options(triton_repo, tmp_path / "stack", workers=1)) as stack:
        holder, survivor = stack.tritons
        survivor.drain()  # both sessions start on the holder
        time.sleep(1.5)
        streamed: dict = {}
        at_frame_30 = threading.Event()

        def run_stream() -> None:
            import asyncio

            from service.rpc.client import SendFrame, TrackClient

            async def gen():
                for i, image in enumerate(frames):
                    if i == 30:
                        at_frame_30.set()
                    await asyncio.sleep(0.03)
                    yield SendFrame(i, image, np.array(Image.open(masks)) if i == 0 else None)

            async def go():
                async with TrackClient(
                    stack.grpc_target, open_options=pb.Open(short_side=240)
                ) as client:
                    streamed["results"] = [r async for r in client.track(gen())]

            asyncio.run(go())

        with httpx.Client(base_url=stack.http_url, timeout=60) as http:
            options = {"size": 240, "outputs": ["png_zip"]}
            job_id = submit(http, video, [masks], options).json()["id"]
            streamer = threading.Thread(target=run_stream)
            streamer.start()
            wait_for(http, job_id, check=lambda job: job.get("frames_done", 0) >= 20,
                     timeout=180)  # fmt: skip
            assert at_frame_30.wait(120)
            assert _job_hash(stack, job_id)["endpoint"] == holder.url
            survivor.drain(False)
            holder.crash()
            final = wait_for(http, job_id, timeout=300)
            streamer.join(300)
            assert final["status"] == "succeeded", final
            got = _zip_masks(http, job_id)
        assert _job_hash(stack, job_id)["endpoint"] == survivor.url
        segment_reference(video, masks, tmp_path / "ref", survivor.url, size=240)
        want = _reference(tmp_path / "ref")
        _assert_same(got, want)
        _assert_same({r.index: result_labels(r) for r in streamed["results"]}, want)
        from service.backends import SyncBackend
        from service.backends.triton import TritonBackend

        backend = SyncBackend(lambda: TritonBackend(survivor.url))
        try:
            assert backend.stats()["re_primes"] == 2  # one for the job, one for the stream
        finally:
            backend.shutdown()
