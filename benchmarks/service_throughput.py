"""The HTTP job service against the bare engine, in one run.

    python benchmarks/service_throughput.py [--configs tiny lite] [--size 240] [--repeats 3]
                                            [--concurrent 1 4 8] [--video V --masks M]

Starts ``isvos serve`` (gateway, one worker with the local backend, a private Redis) per
config and measures, on a real clip (DAVIS 2016 val ``blackswan``, 854x480, 50 frames):

- one job end to end: frames / (last mask written - job created), the job submitted over
  HTTP and no result files asked for (the frames are the output), against the bare engine
  stepping the same frames (decoded and resized beforehand) in this process with the same
  thread count; pairs alternate, the order swapped each repeat, and the ratio is the median
  of the paired ratios;
- submit-to-first-mask latency (202 to the first mask written);
- aggregate frames/s with 1, 4 and 8 jobs submitted at once (the worker runs them
  concurrently; its engine thread batches their steps).

The service and this process share the machine's cores; nothing else should run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAVIS = ROOT.parent / "shared" / "data" / "davis16" / "val"


def start_service(config: str, data: Path, port: int, concurrency: int, threads: int):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
    env.update(ISVOS_BACKEND__CONFIG=config, ISVOS_BACKEND__THREADS=str(threads),
               ISVOS_BACKEND__CONCURRENCY=str(concurrency), ISVOS_STORAGE__DATA_DIR=str(data),
               ISVOS_PORT=str(port), ISVOS_LOG_LEVEL="warning",
               ISVOS_LIMITS__MAX_QUEUED_JOBS="100",
               ISVOS_LIMITS__MAX_ACTIVE_JOBS="100")  # fmt: skip
    if config == "tiny":
        env["ISVOS_BACKEND__CHECKPOINT"] = str(ROOT / "tests" / "assets" / "tiny_synthetic.pt")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("isvos serve did not become ready")
        time.sleep(0.3)


def submit(http: httpx.Client, video: Path, masks: Path, size: int) -> str:
    files = [
        ("video", (video.name, video.read_bytes())),
        ("masks", (masks.name, masks.read_bytes())),
    ]
    options = json.dumps({"size": size, "outputs": []})
    response = http.post("/v1/jobs", files=files, data={"options": options})
    response.raise_for_status()
    return response.json()["id"]


def wait(http: httpx.Client, job_id: str) -> dict:
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id}: {job}")
            return job
        time.sleep(0.25)  # light polling: the gateway shares the cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "lite"])
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrent", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--video", type=Path, default=DAVIS / "videos" / "blackswan.mp4")
    parser.add_argument("--masks", type=Path, default=DAVIS / "masks" / "blackswan" / "00000.png")
    args = parser.parse_args()

    import torch

    from isvos.engine import EagerRunner, Engine
    from isvos.model import build
    from isvos.processing import masks_from_labels, processing_size, resize_frame, resize_labels
    from service.checkpoints import resolve_checkpoint
    from service.media.masks import read_indexed_png
    from service.media.video import iter_frames
    from service.redis_server import free_port

    torch.set_num_threads(args.threads)
    frames = [f.image for f in iter_frames(args.video)]
    first = read_indexed_png(args.masks)
    psize = processing_size(*frames[0].shape[:2], args.size)
    small = [resize_frame(f, psize) for f in frames]
    prompt = masks_from_labels(resize_labels(first, psize))
    rows = []
    for config in args.configs:
        checkpoint = str(ROOT / "tests/assets/tiny_synthetic.pt") if config == "tiny" else None
        engine = Engine(EagerRunner(build(config, resolve_checkpoint(config, checkpoint))))

        def bare(engine=engine) -> float:
            started = time.perf_counter()
            session = engine.open_session(psize)
            for i, image in enumerate(small):
                session.step(i, image, prompt if i == 0 else None)
            return len(small) / (time.perf_counter() - started)

        data = Path(tempfile.mkdtemp(prefix="isvos-svc-bench-"))
        process, url = start_service(config, data, free_port(), max(args.concurrent), args.threads)
        try:
            with httpx.Client(base_url=url, timeout=120) as http:

                def one_job() -> tuple[float, float]:
                    job = wait(http, submit(http, args.video, args.masks, args.size))
                    seconds = job["last_frame_at"] - job["created_at"]
                    return job["frames_done"] / seconds, job["first_frame_at"] - job["created_at"]

                bare()
                one_job()  # warm-up: model pages, codecs, Redis scripts
                pairs, latencies, service_fps, bare_fps = [], [], [], []
                for repeat in range(args.repeats):
                    order = ("bare", "job") if repeat % 2 == 0 else ("job", "bare")
                    pair = {}
                    for name in order:
                        if name == "bare":
                            pair["bare"] = bare()
                        else:
                            pair["job"], latency = one_job()
                            latencies.append(latency)
                    pairs.append(pair["job"] / pair["bare"])
                    service_fps.append(pair["job"])
                    bare_fps.append(pair["bare"])
                aggregate = {}
                for n in args.concurrent:
                    ids = [submit(http, args.video, args.masks, args.size) for _ in range(n)]
                    jobs = [wait(http, i) for i in ids]
                    span = max(j["last_frame_at"] for j in jobs) - min(
                        j["created_at"] for j in jobs
                    )
                    aggregate[n] = sum(j["frames_done"] for j in jobs) / span
                    for i in ids:
                        http.delete(f"/v1/jobs/{i}")
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            shutil.rmtree(data, ignore_errors=True)
        rows.append((config, statistics.median(bare_fps), statistics.median(service_fps),
                     statistics.median(pairs), min(pairs), max(pairs),
                     statistics.median(latencies), aggregate))  # fmt: skip

    print(f"\n{args.video.name} {frames[0].shape[1]}x{frames[0].shape[0]}, {len(frames)} frames, "
          f"processing {psize[1]}x{psize[0]}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, {args.repeats} pairs")  # fmt: skip
    header = (
        f"{'config':<7}{'bare f/s':>10}{'job f/s':>9}{'job/bare':>10}{'(min-max)':>13}"
        f"{'first mask':>12}" + "".join(f"{f'{n} jobs f/s':>12}" for n in args.concurrent)
    )
    print(header)
    for config, bare_f, job_f, ratio, low, high, latency, aggregate in rows:
        print(f"{config:<7}{bare_f:>10.1f}{job_f:>9.1f}{ratio:>10.3f}"
              f"{f'({low:.2f}-{high:.2f})':>13}{latency * 1e3:>10.0f}ms"
              + "".join(f"{aggregate[n]:>12.1f}" for n in args.concurrent))  # fmt: skip
    print(f"\ncommand: python benchmarks/service_throughput.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
