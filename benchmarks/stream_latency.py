"""What gRPC streaming adds per frame, and what concurrent streams get, on loopback.

    python benchmarks/stream_latency.py [--configs tiny lite] [--frames 500] [--size 240]
                                        [--streams 4 8] [--triton]

Starts ``isvos grpc`` (local backend, its own Redis) per config and streams DAVIS 2016 val
``blackswan`` (854x480, raw RGB; the clip repeats up to ``--frames``):

- added latency per frame: the client sends frame i+1 only after result i came back;
  round trip minus the server's own time for the frame (``FrameResult.step_ms``: decode,
  resize, step, upsample, encode), p50 and p99 over the frames after a warm-up;
- frames/s of one stream sending as fast as flow control lets it, against the bare engine
  on the same frames in this process (same thread count);
- aggregate frames/s with 4 and 8 concurrent streams; with ``--triton`` also on the Triton
  backend (a local Triton server from the nvidia-pytriton wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAVIS = ROOT.parent / "shared" / "data" / "davis16" / "val"
WARMUP = 10


def start_grpc(env_extra: dict, data: Path):
    """``isvos grpc`` with these settings; (process, target)."""
    import json

    from service.serve import settings_env
    from service.settings import Settings

    settings = Settings(**env_extra, storage={"data_dir": str(data)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
    env.update(settings_env(settings))
    log = open(data / "grpc.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "grpc"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in (data / "grpc.log").read_text(errors="replace").splitlines():
            if '"grpc_started"' in line:
                return process, f"127.0.0.1:{json.loads(line)['port']}"
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError((data / "grpc.log").read_text()[-2000:])


async def lockstep(target: str, frames, first, size: int) -> tuple[list[float], list[float]]:
    """(round trips ms, server times ms) with one frame in flight at a time."""
    from service.rpc.client import SendFrame, TrackClient
    from service.rpc.gen import segmentation_pb2 as pb

    turn = asyncio.Event()
    turn.set()
    sent: dict[int, float] = {}
    trips, server = [], []

    async def gen():
        for i, image in enumerate(frames):
            await turn.wait()
            turn.clear()
            sent[i] = time.perf_counter()
            yield SendFrame(i, image, first if i == 0 else None)

    async with TrackClient(target, open_options=pb.Open(short_side=size)) as client:
        async for result in client.track(gen()):
            trips.append((time.perf_counter() - sent.pop(result.index)) * 1e3)
            server.append(result.step_ms)
            turn.set()
    return trips[WARMUP:], server[WARMUP:]


async def throughput(target: str, frames, first, size: int, streams: int) -> float:
    from service.rpc.client import SendFrame, TrackClient
    from service.rpc.gen import segmentation_pb2 as pb

    async def one() -> int:
        async def gen():
            for i, image in enumerate(frames):
                yield SendFrame(i, image, first if i == 0 else None)

        async with TrackClient(target, open_options=pb.Open(short_side=size)) as client:
            return sum([1 async for _ in client.track(gen())])

    started = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "lite"])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--streams", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--triton", action="store_true")
    parser.add_argument(
        "--camera", type=int, default=0,
        help="resize the clip's frames to this short side first (a camera of that size)",
    )  # fmt: skip
    args = parser.parse_args()

    import torch

    from isvos.engine import EagerRunner, Engine
    from isvos.model import build
    from isvos.processing import masks_from_labels, processing_size, resize_frame, resize_labels
    from service.checkpoints import resolve_checkpoint
    from service.media.masks import read_indexed_png
    from service.media.video import iter_frames
    from service.redis_server import start_redis

    torch.set_num_threads(args.threads)
    clip = [f.image for f in iter_frames(DAVIS / "videos" / "blackswan.mp4")]
    first = read_indexed_png(DAVIS / "masks" / "blackswan" / "00000.png")
    if args.camera:
        camera = processing_size(*clip[0].shape[:2], args.camera)
        clip = [resize_frame(f, camera) for f in clip]
        first = resize_labels(first, camera)
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    psize = processing_size(*frames[0].shape[:2], args.size)
    small = [resize_frame(f, psize) for f in frames]
    prompt = masks_from_labels(resize_labels(first, psize))
    tmp = Path(tempfile.mkdtemp(prefix="isvos-stream-bench-"))
    redis = start_redis(tmp / "redis")
    rows = []
    try:
        for config in args.configs:
            tiny = str(ROOT / "tests/assets/tiny_synthetic.pt") if config == "tiny" else ""
            engine = Engine(EagerRunner(build(config, resolve_checkpoint(config, tiny or None))))
            session = engine.open_session(psize)
            started = time.perf_counter()
            for i, image in enumerate(small):
                session.step(i, image, prompt if i == 0 else None)
            bare = len(small) / (time.perf_counter() - started)
            backend = {"config": config, "checkpoint": tiny, "threads": args.threads,
                       "concurrency": max(args.streams)}  # fmt: skip
            variants = [("local", backend)]
            triton = None
            if args.triton:
                triton = _start_triton(config, tmp, args.threads)
                variants.append(("triton", {**backend, "kind": "triton",
                                            "triton_urls": [triton.url]}))  # fmt: skip
            for name, section in variants:
                data = tmp / f"{config}-{name}"
                data.mkdir()
                process, target = start_grpc(
                    {"redis": {"url": redis.url}, "backend": section,
                     "grpc": {"port": 0, "max_streams": 64, "max_streams_per_key": 64}},
                    data,
                )  # fmt: skip
                try:
                    trips, server = asyncio.run(lockstep(target, frames, first, args.size))
                    added = sorted(t - s for t, s in zip(trips, server, strict=True))
                    one = asyncio.run(throughput(target, frames, first, args.size, 1))
                    many = {n: asyncio.run(throughput(target, frames[: max(60, args.frames // n)],
                                                      first, args.size, n))
                            for n in args.streams}  # fmt: skip
                finally:
                    process.terminate()
                    process.wait(30)
                rows.append((config, name, statistics.median(added),
                             added[int(len(added) * 0.99)], statistics.median(server),
                             one, bare, many))  # fmt: skip
            if triton is not None:
                triton.stop()
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    height, width = frames[0].shape[:2]
    print(f"\nblackswan {width}x{height} raw RGB, {args.frames} frames, processing "
          f"{psize[1]}x{psize[0]}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'config':<7}{'backend':<8}{'added p50':>10}{'added p99':>10}{'server ms':>10}"
          f"{'1 stream':>10}{'bare':>8}{'ratio':>7}"
          + "".join(f"{f'{n} streams':>11}" for n in args.streams))  # fmt: skip
    for config, name, p50, p99, server_ms, one, bare, many in rows:
        print(f"{config:<7}{name:<8}{p50:>8.2f}ms{p99:>8.2f}ms{server_ms:>8.1f}ms"
              f"{one:>8.1f}/s{bare:>6.1f}/s{one / bare:>7.3f}"
              + "".join(f"{many[n]:>9.1f}/s" for n in args.streams))  # fmt: skip
    print(f"\ncommand: python benchmarks/stream_latency.py {' '.join(sys.argv[1:])}".rstrip())


def _start_triton(config: str, tmp: Path, threads: int):
    from benchmarks.triton_overhead import make_repo
    from service.triton_server import start_local_triton

    repo = make_repo(config, tmp / f"triton-{config}")
    return start_local_triton(repo, export_config=None, parameters={"torch_threads": threads})


if __name__ == "__main__":
    main()
