"""The Python client's retries against a real gateway: one that is not listening yet, one
whose Redis restarts, and errors that a retry cannot mend (raised at once)."""

from __future__ import annotations

import threading
import time

import pytest

from isvos.errors import IsvosError
from service.client import Client
from service.redis_server import free_port, start_redis
from tests.helpers.stack import GatewayServer, make_settings

pytestmark = pytest.mark.timeout(120)


def test_a_submission_waits_for_the_gateway_and_makes_one_job(redis_server, example_clip,
                                                              tmp_path):  # fmt: skip
    settings = make_settings(redis_server.url, tmp_path)
    port = free_port()
    started: list[GatewayServer] = []
    later = threading.Timer(1.5, lambda: started.append(GatewayServer(settings, port=port)))
    later.start()
    try:
        with Client(f"http://127.0.0.1:{port}", retry_s=30) as client:
            job = client.submit(example_clip[0], [example_clip[1]], {"size": 96})
            assert job["status"] == "queued"
            assert client.retries >= 1  # refused connections until the gateway listened
            assert [j["id"] for j in client.list()] == [job["id"]]
    finally:
        later.join()
        for gateway in started:
            gateway.stop()


def test_requests_wait_through_a_redis_restart(example_clip, tmp_path):
    redis = start_redis(tmp_path / "redis", appendfsync="always")
    gateway = GatewayServer(make_settings(redis.url, tmp_path / "data"))
    try:
        with Client(gateway.url, retry_s=30) as client:
            job = client.submit(example_clip[0], [example_clip[1]], {"size": 96})
            redis.stop()
            later = threading.Timer(2.0, redis.start_again)
            later.start()
            began = time.monotonic()
            again = client.get(job["id"])  # 503 unavailable + Retry-After until Redis is back
            later.join()
            assert again["id"] == job["id"] and again["status"] == "queued"
            assert client.retries >= 1 and time.monotonic() - began >= 1.5
    finally:
        gateway.stop()
        redis.stop()


def test_errors_a_retry_cannot_mend_are_raised_at_once(redis_server, tmp_path):
    gateway = GatewayServer(make_settings(redis_server.url, tmp_path))
    try:
        with Client(gateway.url, retry_s=30) as client:
            with pytest.raises(IsvosError) as missing:
                client.get("0" * 32)
            assert missing.value.code == "not_found" and client.retries == 0
    finally:
        gateway.stop()
    with Client(f"http://127.0.0.1:{free_port()}", retry_s=1.0) as client:
        began = time.monotonic()
        with pytest.raises(IsvosError) as away:
            client.get("0" * 32)
        assert away.value.code == "unavailable" and client.retries >= 1
        assert 0.9 <= time.monotonic() - began < 10
