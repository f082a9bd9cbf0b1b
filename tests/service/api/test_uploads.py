"""Resumable uploads (tus 1.0) interrupted and completed, and retention expiry."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.client import Client
from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings, wait_for

pytestmark = pytest.mark.timeout(180)
TUS = {"Tus-Resumable": "1.0.0"}


def test_an_interrupted_upload_resumes_and_becomes_a_job(service, http, example_clip):
    video, masks = example_clip
    data = video.read_bytes()
    half = len(data) // 2
    created = http.post("/v1/uploads", headers={**TUS, "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    first = http.patch(
        url,
        content=data[:half],
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert first.status_code == 204 and int(first.headers["upload-offset"]) == half
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    # Not finished yet: a job cannot use it.
    early = http.post("/v1/jobs", files=[("masks", ("m.png", masks.read_bytes()))],
                      data={"upload_id": upload_id})  # fmt: skip
    assert early.status_code == 409 and early.json()["code"] == "failed_precondition"
    # A new client (the first one "crashed") asks where it stopped and sends the rest.
    with Client(service.url) as client:
        resumed = client.upload(video, upload_url=url)
        assert resumed == upload_id
        job = client.submit(None, [masks], {"size": 96, "outputs": []}, upload_id=upload_id)
        final = client.wait(job["id"])
    assert final["status"] == "succeeded" and final["frames_done"] == 72
    # The upload became the job's video: it cannot be used twice.
    again = http.post("/v1/jobs", files=[("masks", ("m.png", masks.read_bytes()))],
                      data={"upload_id": upload_id})  # fmt: skip
    assert again.status_code == 404


def test_retention_expiry_removes_keys_and_files(redis_server, tmp_path, example_clip):
    import redis.asyncio as aioredis

    from service.api.deps import Gateway
    from service.blobs import LocalBlobStore
    from service.jobs.store import JobStore
    from service.jobs.sweeper import sweep_once
    from service.keys import Keys
    from service.media.frames import FrameServer

    settings = make_settings(redis_server.url, tmp_path, jobs={"retention_s": 1})
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, tmp_path).wait_started()
    try:
        with Client(gateway.url) as client:
            job = client.submit(example_clip[0], [example_clip[1]], {"size": 96})
            assert client.wait(job["id"])["status"] == "succeeded"
        folder = tmp_path / "blobs" / "jobs" / job["id"]
        assert folder.is_dir()
        time.sleep(1.5)

        async def sweep():
            redis = aioredis.from_url(settings.redis.url)
            keys = Keys(settings.redis.key_prefix)
            gw = Gateway(settings, redis, keys, JobStore(redis, keys, settings.jobs),
                         LocalBlobStore(tmp_path / "blobs"), tmp_path / "uploads",
                         FrameServer(settings.limits.media()))  # fmt: skip
            removed = await sweep_once(gw)
            left = [k async for k in redis.scan_iter(match=f"{keys.prefix}:*")
                    if job["id"].encode() in k]  # fmt: skip
            expiry = await redis.zscore(keys.expiry, job["id"])
            await redis.aclose()
            return removed, left, expiry

        removed, left, expiry = asyncio.run(sweep())
        assert removed["expired"] == 1 and left == [] and expiry is None
        assert not folder.exists()
        with gateway.client() as http:
            assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
    finally:
        worker.stop()
        gateway.stop()


def test_another_keys_upload_is_not_found(redis_server, tmp_path):
    from service.settings import token_digest

    settings = make_settings(redis_server.url, tmp_path, auth={
        "keys": {"a": token_digest("token-a"), "b": token_digest("token-b")}})  # fmt: skip
    gateway = GatewayServer(settings)
    try:
        with gateway.client("token-a") as a, gateway.client("token-b") as b:
            url = a.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"}).headers["location"]
            assert a.head(url, headers=TUS).status_code == 200
            assert b.head(url, headers=TUS).status_code == 404
            patch = b.patch(
                url,
                content=b"0123456789",
                headers={
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert patch.status_code == 404
    finally:
        gateway.stop()


def test_wait_for_is_a_poll(service, http, example_clip):
    """The helper itself: a job that is done returns at once."""
    from tests.helpers.stack import submit

    job = submit(http, *example_clip[:1], [example_clip[1]], {"size": 96, "outputs": []}).json()
    started = time.monotonic()
    wait_for(http, job["id"])
    assert time.monotonic() - started < 60
