"""Load on the whole service: uploads and camera streams at once, then the clean-up.

    python benchmarks/load.py                         # 10 minutes, 50 uploads, 8 streams
    python benchmarks/load.py --minutes 3 --uploads 15 --streams 4

Starts ``isvos serve`` (gateway, ``--workers`` workers, the gRPC server; the ``tiny`` model so
that the service, not the model, is loaded) on a Redis of its own, then for ``--minutes``:

- ``--uploads`` jobs of the example clip (72 frames, 320x240), submitted evenly over the
  time (a multipart upload each), each followed until it ends: submit-to-finish seconds;
- ``--streams`` concurrent gRPC streams, each streaming the clip again and again at
  ``--fps`` (a camera's rate): the time from sending a frame to receiving its result (every
  frame, every stream).

Afterwards: every job succeeded? every stream completed? HTTP 5xx count; p50 / p99 of job
completion and of stream latency; then, once the retention time has passed and the sweeper
ran, Redis memory and the blob folder against the baseline before the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_child import start_serve  # noqa: E402

VIDEO = REPO / "examples" / "shapes.mp4"
MASKS = REPO / "examples" / "shapes_first_frame.png"
RETENTION_S = 60


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Counters:
    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.jobs: dict[str, int] = {}
        self.job_seconds: list[float] = []
        self.frame_ms: list[float] = []
        self.streams_done = 0
        self.stream_errors: list[str] = []

    def saw(self, response: httpx.Response) -> httpx.Response:
        self.status[response.status_code] = self.status.get(response.status_code, 0) + 1
        return response


async def one_job(http: httpx.AsyncClient, counters: Counters) -> None:
    started = time.perf_counter()
    files = [("video", ("clip.mp4", VIDEO.read_bytes())), ("masks", ("m.png", MASKS.read_bytes()))]
    created = counters.saw(await http.post("/v1/jobs", files=files,
                                           data={"options": '{"size": 96}'}))  # fmt: skip
    if created.status_code != 202:
        counters.jobs[f"refused {created.status_code}"] = counters.jobs.get(
            f"refused {created.status_code}", 0) + 1  # fmt: skip
        return
    job_id = created.json()["id"]
    while True:
        await asyncio.sleep(0.25)
        job = counters.saw(await http.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
    counters.jobs[job["status"]] = counters.jobs.get(job["status"], 0) + 1
    counters.job_seconds.append(time.perf_counter() - started)


async def uploads(url: str, count: int, seconds: float, counters: Counters) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(one_job(http, counters)))
            await asyncio.sleep(seconds / count)
        await asyncio.gather(*tasks)


async def streams(target: str, count: int, seconds: float, fps: float, frames, labels,
                  counters) -> None:  # fmt: skip
    from service.rpc.client import SendFrame, TrackClient
    from service.rpc.gen import segmentation_pb2 as pb

    deadline = time.monotonic() + seconds

    async def one_stream() -> None:
        sent: dict[int, float] = {}

        async def source():
            first = time.perf_counter()
            for i, image in enumerate(frames):
                if fps:  # a camera: frames come at their rate, not as fast as allowed
                    await asyncio.sleep(max(0.0, first + i / fps - time.perf_counter()))
                sent[i] = time.perf_counter()
                yield SendFrame(i, image, labels if i == 0 else None)

        async with TrackClient(target, open_options=pb.Open(short_side=96)) as client:
            received = 0
            async for result in client.track(source()):
                counters.frame_ms.append((time.perf_counter() - sent[result.index]) * 1e3)
                received += 1
        if received != len(frames):
            raise RuntimeError(f"{received} results for {len(frames)} frames")

    async def loop() -> None:
        while time.monotonic() < deadline:
            try:
                await one_stream()
                counters.streams_done += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                counters.stream_errors.append(f"{type(exc).__name__}: {exc}"[:200])

    await asyncio.gather(*(loop() for _ in range(count)))


def start(folder: Path, redis_url: str, workers: int) -> tuple[subprocess.Popen, str, str]:
    from service.redis_server import free_port

    grpc_port = free_port()
    settings = {
        "ISVOS_REDIS__URL": redis_url, "ISVOS_STORAGE__DATA_DIR": str(folder / "data"),
        "ISVOS_BACKEND__CONFIG": "tiny",
        "ISVOS_BACKEND__CHECKPOINT": str(REPO / "tests" / "assets" / "tiny_synthetic.pt"),
        "ISVOS_BACKEND__THREADS": "1", "ISVOS_JOBS__RETENTION_S": str(RETENTION_S),
        "ISVOS_JOBS__SWEEP_EVERY_S": "5", "ISVOS_GRPC__RESUME_TTL_S": str(RETENTION_S),
    }  # fmt: skip
    process, url = start_serve(folder, settings, "--workers", str(workers), "--grpc-port",
                               str(grpc_port))  # fmt: skip
    return process, url, f"127.0.0.1:{grpc_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--fps",
        type=float,
        default=24.0,
        help="frames per second each stream sends (0: as fast as allowed)",
    )
    args = parser.parse_args()

    import numpy as np
    import redis
    from PIL import Image

    from service.media.video import iter_frames
    from service.redis_server import start_redis

    frames = [f.image for f in iter_frames(VIDEO)]
    labels = np.array(Image.open(MASKS))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis_process = start_redis(folder / "redis")
        client = redis.Redis.from_url(redis_process.url)
        process, url, target = start(folder, redis_process.url, args.workers)
        blobs = folder / "data" / "blobs"
        try:
            client.memory_purge()
            base_memory = client.info("memory")["used_memory"]
            base_disk = folder_bytes(blobs) if blobs.exists() else 0
            counters = Counters()
            seconds = args.minutes * 60
            started = time.perf_counter()

            async def load():
                await asyncio.gather(
                    uploads(url, args.uploads, seconds, counters),
                    streams(target, args.streams, seconds, args.fps, frames, labels, counters),
                )

            asyncio.run(load())
            elapsed = time.perf_counter() - started
            peak_memory = client.info("memory")["used_memory"]
            peak_disk = folder_bytes(blobs)
            time.sleep(RETENTION_S + 15)  # retention, then a sweep
            client.memory_purge()
            after_memory = client.info("memory")["used_memory"]
            after_disk = folder_bytes(blobs)
            keys = {k.decode(): f"{client.type(k).decode()} {client.memory_usage(k)} B"
                    for k in client.scan_iter()}  # fmt: skip
        finally:
            process.terminate()
            process.wait(60)
            redis_process.stop()
    server_errors = sum(n for status, n in counters.status.items() if status >= 500)
    print(json.dumps({
        "minutes": round(elapsed / 60, 1), "workers": args.workers,
        "jobs": counters.jobs, "uploads_asked": args.uploads,
        "job_seconds_p50": round(percentile(counters.job_seconds, 0.5), 2),
        "job_seconds_p99": round(percentile(counters.job_seconds, 0.99), 2),
        "streams_completed": counters.streams_done, "stream_errors": counters.stream_errors[:5],
        "stream_frames": len(counters.frame_ms),
        "frame_ms_p50": round(percentile(counters.frame_ms, 0.5), 1),
        "frame_ms_p99": round(percentile(counters.frame_ms, 0.99), 1),
        "http_status_counts": counters.status, "http_5xx": server_errors,
        "redis_bytes": {"before": base_memory, "peak": peak_memory, "after": after_memory},
        "redis_keys_after": keys, "stream_fps": args.fps,
        "blob_bytes": {"before": base_disk, "peak": peak_disk, "after": after_disk},
        "mean_stream_frames_per_s": round(len(counters.frame_ms) / elapsed, 1),
        "stats_median_frame_ms": round(statistics.median(counters.frame_ms), 1)
        if counters.frame_ms else None,
    }, indent=1))  # fmt: skip
    ok = (counters.jobs.get("succeeded") == args.uploads and not counters.stream_errors
          and server_errors == 0)  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
