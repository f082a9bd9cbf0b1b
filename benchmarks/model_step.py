"""Median per-frame step time of the engine, per config, size and object count.

    python benchmarks/model_step.py [--configs tiny lite paper-r50] [--device cpu|cuda]

Prints a table next to the peer figures of ENVIRONMENT.md (their public inference code,
random weights, same CPUs, 2 threads, 1 object), then memory-bank bytes and process RSS at
frames 50 and 500. Weights are random (the lite backbone has its ImageNet weights): speed
does not depend on them.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from isvos.config import MemoryOptions
from isvos.engine import EagerRunner, Engine
from isvos.model import build
from isvos.train.synthetic import synthetic_clip

# ENVIRONMENT.md: full per-frame step, 1 object, median of 29 steps, 2 threads (seconds).
PEERS = {
    (240, 432): {"Cutie-small": 0.140, "Cutie-base": 0.185, "XMem": 0.317},
    (480, 854): {"Cutie-small": 0.60, "Cutie-base": 0.90, "XMem": 1.41},
}


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clip_frames(size: tuple[int, int], objects: int, count: int) -> tuple[list, dict]:
    frames, labels = synthetic_clip(
        np.random.default_rng(0), num_frames=count, height=size[0], width=size[1],
        num_objects=objects, max_speed=2.0,
    )  # fmt: skip
    masks = {o: labels[0] == o for o in range(1, objects + 1) if (labels[0] == o).any()}
    return list(frames), masks


def time_steps(
    engine: Engine, size, objects: int, steps: int, device: str,
    options: MemoryOptions | None = None,
) -> dict:  # fmt: skip
    frames, masks = clip_frames(size, objects, 8)
    session = engine.open_session(size, options or MemoryOptions())
    session.step(0, frames[0], masks)
    all_times, plain_times = [], []
    for i in range(1, steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = session.step(i, frames[i % len(frames)])
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if i > 3:  # warm-up
            all_times.append(elapsed)
            if not result.memorised:
                plain_times.append(elapsed)
    return {
        "median_s": statistics.median(all_times),
        "median_plain_s": statistics.median(plain_times),
        "memory_bytes": session.memory_bytes(),
    }


def bounded_memory(engine: Engine, size) -> list[tuple[int, int, float]]:
    frames, masks = clip_frames(size, 1, 8)
    session = engine.open_session(size, MemoryOptions())
    rows = []
    for i in range(501):
        session.step(i, frames[i % len(frames)], masks if i == 0 else None)
        if i in (50, 500):
            rows.append((i, session.memory_bytes(), rss_mib()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "lite", "paper-r50"])
    parser.add_argument("--sizes", nargs="+", default=["240x432", "480x854"])
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--steps", type=int, default=29)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--no-keep-memory", action="store_true",
        help="glibc's default allocator settings (isvos.allocator off)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"keep_memory={not args.no_keep_memory}")  # fmt: skip
    print(
        f"{'config':<10} {'size':>8} {'obj':>3} {'median step':>12} "
        f"{'non-memory':>11} {'bank MiB':>9}"
    )
    for name in args.configs:
        engine = Engine(
            EagerRunner(build(name, device=args.device)), keep_memory=not args.no_keep_memory
        )
        for size in sizes:
            steps = (
                args.steps
                if not (name == "paper-r50" and size[0] >= 480)
                else max(9, args.steps // 3)
            )
            for objects in args.objects:
                r = time_steps(engine, size, objects, steps, args.device)
                print(
                    f"{name:<10} {size[0]}x{size[1]:>4} {objects:>3} "
                    f"{r['median_s'] * 1000:>10.1f}ms"
                    f" {r['median_plain_s'] * 1000:>9.1f}ms {r['memory_bytes'] / 2**20:>9.2f}"
                )
    print("\npeers (ENVIRONMENT.md, 1 object, same CPUs):")
    for size, peers in PEERS.items():
        print(
            f"  {size[0]}x{size[1]}: "
            + ", ".join(f"{k} {v * 1000:.0f}ms" for k, v in peers.items())
        )
    if not args.skip_memory:
        engine = Engine(EagerRunner(build("lite", device=args.device)),
                        keep_memory=not args.no_keep_memory)  # fmt: skip
        print("\nlite 240x432, 1 object: frame, memory-bank bytes, process RSS")
        for frame, nbytes, rss in bounded_memory(engine, (240, 432)):
            print(f"  frame {frame:>3}: bank {nbytes} B, RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
