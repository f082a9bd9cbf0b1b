"""Faults with real processes: a worker killed mid-job, a worker stalled past its lease, and
Redis restarted while jobs wait and run. Nothing acknowledged is lost, nothing is written
twice by two workers, and masks equal those of an uninterrupted run."""

from __future__ import annotations

import io
import json
import signal
import time
import zipfile

import numpy as np
import pytest
import redis
from PIL import Image

from service.redis_server import start_redis
from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings, submit, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
OPTIONS = {"size": 240, "outputs": ["png_zip"], "memory": {"mem_every": 5}}
FRAMES = 160  # the long_clip fixture's


@pytest.fixture()
def stack(tmp_path):
    """A private Redis (restarted by a test), a gateway, and workers started on demand."""
    server = start_redis(tmp_path / "redis", appendfsync="always")
    settings = make_settings(server.url, tmp_path / "data", jobs={"lease_s": 2.0})
    gateway = GatewayServer(settings)
    workers: list[WorkerProcess] = []

    class Stack:
        def __init__(self):
            self.redis_server, self.settings, self.gateway = server, settings, gateway

        def worker(self) -> WorkerProcess:
            w = WorkerProcess(settings, tmp_path).wait_started()
            workers.append(w)
            return w

        def job_hash(self, job_id: str) -> dict:
            client = redis.Redis(port=server.port)
            data = client.hgetall(f"{settings.redis.key_prefix}:job:{job_id}")
            client.close()
            return {k.decode(): v.decode() for k, v in data.items()}

    yield Stack()
    for w in workers:
        w.stop()
    gateway.stop()
    server.stop()


def _masks(http, job_id: str) -> dict[str, np.ndarray]:
    data = http.get(f"/v1/jobs/{job_id}/result").content
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {n: np.array(Image.open(io.BytesIO(archive.read(n)))) for n in archive.namelist()}


def _holder(stack, job_id: str, workers) -> WorkerProcess:
    name = stack.job_hash(job_id)["worker"]
    return next(w for w in workers if w.name == name)


def test_a_killed_worker_s_job_finishes_elsewhere_identically(stack, long_clip):
    a, b = stack.worker(), stack.worker()
    with stack.gateway.client() as http:
        reference = submit(http, *long_clip[:1], [long_clip[1]], OPTIONS).json()
        assert wait_for(http, reference["id"], timeout=180)["status"] == "succeeded"
        job = submit(http, *long_clip[:1], [long_clip[1]], OPTIONS).json()
        wait_for(http, job["id"], check=lambda j: j["frames_done"] >= 50, timeout=120)
        victim = _holder(stack, job["id"], [a, b])
        victim.signal(signal.SIGKILL)
        final = wait_for(http, job["id"], timeout=180)
        assert final["status"] == "succeeded" and final["attempts"] == 2, final
        counters = stack.job_hash(job["id"])
        resumed_from, steps = int(counters["resumed_from"]), int(counters["steps"])
        assert resumed_from >= 40  # primed from the record, not restarted from frame 0
        # Frames written twice: those after the last stored record (records are stored as
        # frames are written, every mem_every steps), plus at most the frame in flight.
        recomputed = steps - FRAMES
        assert 0 <= recomputed <= OPTIONS["memory"]["mem_every"] + 1, counters
        survivor = b if victim is a else a
        assert survivor.name == counters["worker"]
        got, want = _masks(http, job["id"]), _masks(http, reference["id"])
        assert got.keys() == want.keys() and len(got) == FRAMES
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_stalled_worker_cannot_write_after_the_job_moved_on(stack, long_clip):
    a = stack.worker()
    with stack.gateway.client() as http:
        job = submit(http, *long_clip[:1], [long_clip[1]], OPTIONS).json()
        wait_for(http, job["id"], check=lambda j: j["frames_done"] >= 30, timeout=120)
        a.signal(signal.SIGSTOP)  # stalls past its lease (2 s)
        stalled_at = int(stack.job_hash(job["id"])["frames_done"])
        b = stack.worker()
        wait_for(http, job["id"], check=lambda j: j["attempts"] == 2
                 and j["frames_done"] >= stalled_at + 20, timeout=120)  # fmt: skip
        before = stack.job_hash(job["id"])
        a.signal(signal.SIGCONT)  # wakes up believing it holds the job
        final = wait_for(http, job["id"], timeout=180)
        assert final["status"] == "succeeded", final
        deadline = time.monotonic() + 20
        while '"job_fenced"' not in a.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        fenced = [json.loads(line) for line in a.log().splitlines()
                  if '"job_fenced"' in line]  # fmt: skip
        assert fenced and fenced[0]["trace_id"] == job["id"] and fenced[0]["fence"] == 1
        assert '"job_succeeded"' not in a.log()
        after = stack.job_hash(job["id"])
        assert after["worker"] == before["worker"] == b.name and after["fence"] == "2"
        # Every frame counted once per writer: the stale worker's writes were all refused.
        assert int(after["steps"]) - FRAMES <= stalled_at - int(after["resumed_from"]) + 1
        masks = _masks(http, job["id"])
        assert len(masks) == FRAMES


def test_redis_restarts_lose_no_acknowledged_job(stack, long_clip):
    with stack.gateway.client() as http:
        # A job acknowledged with 202 while no worker runs, then Redis restarts.
        queued = submit(http, *long_clip[:1], [long_clip[1]], OPTIONS)
        assert queued.status_code == 202
        server = stack.redis_server
        server.stop()
        down = http.get(f"/v1/jobs/{queued.json()['id']}")
        assert down.status_code == 503 and down.json()["code"] == "unavailable"
        server.start_again()
        assert http.get(f"/v1/jobs/{queued.json()['id']}").json()["status"] == "queued"
        w = stack.worker()
        running = submit(http, *long_clip[:1], [long_clip[1]], OPTIONS).json()
        wait_for(http, running["id"], check=lambda j: j["frames_done"] >= 20, timeout=120)
        # Redis restarts while that job runs.
        stack.redis_server.stop()
        time.sleep(1.0)
        server.start_again()
        finals = [wait_for(http, j, timeout=240) for j in (queued.json()["id"], running["id"])]
        assert [f["status"] for f in finals] == ["succeeded", "succeeded"], finals
        assert all(f["frames_done"] == FRAMES for f in finals)
        a, b = _masks(http, finals[0]["id"]), _masks(http, finals[1]["id"])
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert '"redis_unavailable"' in w.log() or '"job_released"' in w.log()
