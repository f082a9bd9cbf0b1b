"""Jobs end to end through the real HTTP API, Redis and a worker process (tiny model)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_CHECKPOINT
from tests.helpers.stack import submit, wait_for

pytestmark = pytest.mark.timeout(180)
OPTIONS = {"size": 96, "outputs": ["png_zip", "rle_json", "overlay_mp4", "preview_png"]}


@pytest.fixture(scope="module")
def reference(example_clip, tmp_path_factory):
    """`isvos segment` on the same video and options (a process of its own, 1 thread)."""
    video, masks = example_clip
    out = tmp_path_factory.mktemp("reference")
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(masks),
         "--out", str(out), "--size", "96", "--config", "tiny", "--checkpoint",
         str(TINY_CHECKPOINT), "--threads", "1", "--rle"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _zip_masks(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {n: np.array(Image.open(io.BytesIO(archive.read(n)))) for n in archive.namelist()}


def test_a_job_from_upload_to_every_output(http, example_clip, reference):
    video, masks = example_clip
    created = submit(http, video, [masks], OPTIONS)
    assert created.status_code == 202, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["frames_total"] == 72
    assert job["video"]["width"] == 320 and job["links"]["events"].endswith("/events")
    done = wait_for(http, job["id"])
    assert done["status"] == "succeeded", done
    assert done["frames_done"] == 72 and done["attempts"] == 1
    assert sorted(done["outputs"]) == sorted(OPTIONS["outputs"])
    # Masks identical to `isvos segment` on the same video and options.
    zipped = _zip_masks(http.get(f"/v1/jobs/{job['id']}/result?format=png_zip").content)
    assert len(zipped) == 72
    for name, labels in zipped.items():
        expected = np.array(Image.open(reference / name))
        np.testing.assert_array_equal(labels, expected, err_msg=name)
    rle = http.get(f"/v1/jobs/{job['id']}/result", params={"format": "rle_json"})
    assert rle.headers["content-type"] == "application/json"
    assert rle.json() == json.loads((reference / "masks.json").read_text())
    # Single frames, and a Range request on a result.
    frame = http.get(f"/v1/jobs/{job['id']}/frames/5.png")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(frame.content))),
                                  zipped["masks/00005.png"])  # fmt: skip
    overlay = http.get(f"/v1/jobs/{job['id']}/result?format=overlay_mp4")
    assert overlay.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(overlay.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 72
    part = http.get(f"/v1/jobs/{job['id']}/result?format=overlay_mp4",
                    headers={"Range": "bytes=10-109"})  # fmt: skip
    assert part.status_code == 206 and part.content == overlay.content[10:110]
    preview = http.get(f"/v1/jobs/{job['id']}/result?format=preview_png")
    assert Image.open(io.BytesIO(preview.content)).format == "PNG"


def test_events_arrive_in_order_and_a_reconnect_resumes(http, example_clip):
    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 96, "outputs": []}).json()
    first = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in _events(response):
            first.append(event)
            if event["data"].get("type") == "progress" and int(event["data"]["frames_done"]) >= 10:
                break  # the client drops the connection
    last_id = first[-1]["id"]
    rest = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events",
                     headers={"Last-Event-ID": last_id}) as response:  # fmt: skip
        rest = list(_events(response))
    events = first + rest
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert [e["data"]["status"] for e in events if e["event"] == "status"] == [
        "queued", "running", "succeeded"]  # fmt: skip
    done = [int(e["data"]["frames_done"]) for e in events if e["event"] == "progress"]
    assert done == list(range(1, 73))  # every frame once, in order, across the reconnect


def _events(response: httpx.Response):
    event: dict = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
                if event.get("event") == "status" and event["data"]["status"] in (
                    "succeeded", "failed", "cancelled"):  # fmt: skip
                    return
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            event[key] = value


def test_idempotent_resubmission_returns_the_same_job(http, example_clip):
    video, masks = example_clip
    a = submit(http, video, [masks], {"size": 96, "outputs": []}, Idempotency_Key="clip-1")
    b = submit(http, video, [masks], {"size": 96, "outputs": []}, Idempotency_Key="clip-1")
    c = submit(http, video, [masks], {"size": 96, "outputs": []}, Idempotency_Key="clip-2")
    assert a.status_code == b.status_code == c.status_code == 202
    assert a.json()["id"] == b.json()["id"] != c.json()["id"]
    for job in (a.json(), c.json()):
        wait_for(http, job["id"])


def test_two_jobs_run_in_parallel(http, example_clip):
    video, masks = example_clip
    jobs = [submit(http, video, [masks], {"size": 96, "outputs": ["png_zip"]}).json()
            for _ in range(2)]  # fmt: skip
    seen_running = set()

    def both_running(job):
        if job["status"] == "running":
            seen_running.add(job["id"])
        return False

    deadline = time.monotonic() + 60
    while len(seen_running) < 2 and time.monotonic() < deadline:
        for job in jobs:
            both_running(http.get(f"/v1/jobs/{job['id']}").json())
    finals = [wait_for(http, j["id"]) for j in jobs]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded"]
    results = [http.get(f"/v1/jobs/{j['id']}/result").content for j in jobs]
    assert _zip_masks(results[0]).keys() == _zip_masks(results[1]).keys()
    assert len(seen_running) == 2


def test_cancel_and_delete_leave_nothing(http, service, example_clip):
    import redis

    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 240, "outputs": []}).json()
    wait_for(http, job["id"], statuses=("running",), check=lambda j: j["frames_done"] >= 2)
    started = time.monotonic()
    assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
    settings = service.settings
    client = redis.Redis.from_url(settings.redis.url)
    folder = settings.storage.data_dir / "blobs" / "jobs" / job["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        keys = [k for k in client.scan_iter(match=f"{settings.redis.key_prefix}:*")
                if job["id"].encode() in k]  # fmt: skip
        members = [k for k in client.scan_iter(match=f"{settings.redis.key_prefix}:owner:*")
                   if client.type(k) in (b"set", b"zset") and (
                       client.sismember(k, job["id"]) if client.type(k) == b"set"
                       else client.zscore(k, job["id"]) is not None)]  # fmt: skip
        if not keys and not members and not folder.exists():
            break
        time.sleep(0.2)
    assert not keys and not members and not folder.exists(), (keys, members)
    assert time.monotonic() - started < 10
    # The worker stopped the job within about a second and is free for the next one.
    again = submit(http, video, [masks], {"size": 96, "outputs": []}).json()
    assert wait_for(http, again["id"], timeout=30)["status"] == "succeeded"


def test_listing_pages_and_filters(http, example_clip):
    video, masks = example_clip
    ids = [submit(http, video, [masks], {"size": 96, "outputs": []}).json()["id"]
           for _ in range(3)]  # fmt: skip
    for job_id in ids:
        wait_for(http, job_id)
    page = http.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["jobs"]) == 2 and page["next_cursor"]
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
    second = http.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert second["jobs"][0]["id"] == ids[0]
    succeeded = http.get("/v1/jobs", params={"status": "succeeded", "limit": 200}).json()["jobs"]
    assert {j["status"] for j in succeeded} == {"succeeded"}
    assert set(ids) <= {j["id"] for j in succeeded}
    assert http.get("/v1/jobs", params={"status": "failed"}).json()["jobs"] == []


def test_health_readiness_metrics_and_docs(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    metrics = http.get("/metrics").text
    for name in ("isvos_jobs_total{status=\"succeeded\"}", "isvos_frames_total",
                 "isvos_queue_depth", "isvos_frame_seconds_bucket", "isvos_upload_bytes_total",
                 "isvos_active_sessions", "isvos_workers"):  # fmt: skip
        assert name in metrics, name
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert "/v1/jobs/{job_id}/events" in spec["paths"]


def test_an_idempotency_key_of_a_job_that_is_gone_makes_a_new_job(http, service, example_clip):
    import redis

    video, masks = example_clip
    first = submit(http, video, [masks], {"size": 96, "outputs": []}, Idempotency_Key="gone-1")
    wait_for(http, first.json()["id"])
    # The job's keys expire (as after the retention time), its idempotency key not yet.
    client = redis.Redis.from_url(service.settings.redis.url)
    client.delete(f"{service.settings.redis.key_prefix}:job:{first.json()['id']}")
    client.close()
    again = submit(http, video, [masks], {"size": 96, "outputs": []}, Idempotency_Key="gone-1")
    assert again.status_code == 202, again.text
    assert again.json()["id"] != first.json()["id"]
    wait_for(http, again.json()["id"])


def test_a_reconnect_after_the_final_event_ends_at_once(http, example_clip):
    video, masks = example_clip
    job = submit(http, video, [masks], {"size": 96, "outputs": []}).json()
    wait_for(http, job["id"])
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        events = list(_events(response))
    started = time.monotonic()
    last = {"Last-Event-ID": events[-1]["id"]}
    with http.stream("GET", f"/v1/jobs/{job['id']}/events", headers=last, timeout=10) as response:
        assert list(_events(response)) == []
    assert time.monotonic() - started < 5


def test_a_preset_is_resolved_into_the_stored_options(http, example_clip):
    """The job shows the size and memory it runs with: the preset's, the caller's on top."""
    from isvos.presets import PRESETS

    video, masks = example_clip
    options = {"preset": "fast", "memory": {"top_k": 7}, "outputs": []}
    response = submit(http, video, [masks], options)
    assert response.status_code == 202, response.text
    job = wait_for(http, response.json()["id"])
    fast = PRESETS["fast"]
    assert job["status"] == "succeeded", job
    stored = job["options"]
    assert stored["preset"] == "fast" and stored["size"] == fast.short_side(96)
    assert stored["memory"]["top_k"] == 7
    assert stored["memory"]["mem_every"] == fast.mem_every
    assert stored["memory"]["max_memory_frames"] == fast.max_memory_frames
