"""What Triton costs per frame, and what concurrent sessions get out of it.

    python benchmarks/triton_overhead.py [--configs tiny lite] [--size 240 432] [--frames 30]
                                         [--threads 1] [--sessions 1 4 8]
                                         [--device cpu|gpu] [--memory-dtype auto|float16]

On a GPU (issue 11's figures: lite and paper-r50 at 480p, fp16 memory bank, 1, 4 and 16
sessions against the bare engine on the same GPU):

    python benchmarks/triton_overhead.py --configs lite paper-r50 --size 480 864 \
        --device gpu --memory-dtype float16 --sessions 1 4 16 --threads 4

For each config the graphs are exported once into a temporary model repository; then, in the
same run and on the same frames (a synthetic clip, two objects):

- per-frame step time through the bare engine (a session over the same exported graphs, in
  this process) and through Triton (``TritonBackend`` over gRPC to a local server started
  with ``start_local_triton``, called through ``SyncBackend``), interleaved frame by frame
  so background load hits both alike; median per frame (the first frames, which warm up the
  TorchScript executor, are left out) and the ratio;
- throughput with 1, 4 and 8 concurrent sessions (one thread each) on that server, and the
  largest cross-session batch the model formed.

The client keeps records for recovery (the default), so its per-frame cost is included.
tiny uses the committed test checkpoint; lite uses random weights (speed does not depend on
them). Quote ratios from one run: other work shares these CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 5


def make_repo(config: str, folder: Path) -> Path:
    from service.triton_server import exported_repository

    checkpoint = ROOT / "tests" / "assets" / "tiny_synthetic.pt" if config == "tiny" else None
    return exported_repository(ROOT / "model_repo", folder / config / "model_repo", config,
                               checkpoint)  # fmt: skip


def make_clip(size: tuple[int, int], frames: int, seed: int = 0):
    from isvos.train.synthetic import synthetic_clip

    images, labels = synthetic_clip(
        np.random.default_rng(seed), num_frames=frames, height=size[0], width=size[1],
        num_objects=2, max_speed=2.0,
    )  # fmt: skip
    masks = {o: labels[0] == o for o in (1, 2) if (labels[0] == o).any()}
    return images, masks


def per_frame(engine, remote, size, images, masks) -> tuple[list[float], list[float]]:
    """Step the bare engine and Triton frame by frame; (local, triton) seconds per frame."""
    from isvos.config import MemoryOptions

    session = engine.open_session(size, MemoryOptions(max_objects=4))
    handle = remote.open("bench-triton", size, {"max_objects": 4})
    times: dict[str, list[float]] = {"local": [], "triton": []}
    for i, image in enumerate(images):
        first = masks if i == 0 else None
        started = time.perf_counter()
        session.step(i, image, first)
        times["local"].append(time.perf_counter() - started)
        started = time.perf_counter()
        remote.step(handle, i, image, first)
        times["triton"].append(time.perf_counter() - started)
    session.close()
    remote.close(handle)
    return times["local"][WARMUP:], times["triton"][WARMUP:]


def throughput(url: str, sessions: int, size, images, masks) -> tuple[float, int]:
    """Frames per second over ``sessions`` concurrent sessions; the largest batch formed."""
    backend = _sync_triton(url)
    before = backend.stats()["max_step_batch"]
    barrier = threading.Barrier(sessions + 1)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            handle = backend.open(f"tp-{sessions}-{k}", size, {"max_objects": 4})
            backend.step(handle, 0, images[0], masks)  # warm (memorised, prompt)
            barrier.wait()
            for i in range(1, len(images)):
                backend.step(handle, i, images[i])
            backend.close(handle)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(sessions)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    stats = backend.stats()
    backend.shutdown()
    return sessions * (len(images) - 1) / elapsed, max(before, stats["max_step_batch"])


def _sync_triton(url: str):
    from service.backends import SyncBackend
    from service.backends.triton import TritonBackend

    return SyncBackend(lambda: TritonBackend(url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "lite"])
    parser.add_argument("--size", nargs=2, type=int, default=[240, 432], metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--throughput-frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--sessions", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--device", default="cpu", help="cpu | gpu (both sides)")
    parser.add_argument("--memory-dtype", default="auto", help="auto | float16 | float32")
    args = parser.parse_args()

    import torch

    from isvos.engine import Engine, ScriptedRunner
    from service.triton_server import start_local_triton

    torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[1])
    images, masks = make_clip(size, args.frames)
    rows = []
    with tempfile.TemporaryDirectory(prefix="isvos-bench-") as tmp:
        for config in args.configs:
            repo = make_repo(config, Path(tmp))
            device = "cuda" if args.device == "gpu" else "cpu"
            dtype = None if args.memory_dtype == "auto" else getattr(torch, args.memory_dtype)
            local = Engine(ScriptedRunner(repo / "isvos" / "1", device=device),
                           memory_dtype=dtype)  # fmt: skip
            server = start_local_triton(
                repo, export_config=None, device=args.device,
                parameters={"torch_threads": args.threads, "memory_dtype": args.memory_dtype},
            )  # fmt: skip
            try:
                remote = _sync_triton(server.url)
                local_t, triton_t = per_frame(local, remote, size, images, masks)
                remote.shutdown()
                flows = {}
                for n in args.sessions:
                    flows[n] = throughput(
                        server.url, n, size, images[: args.throughput_frames], masks
                    )
            finally:
                server.stop()
            rows.append((config, local_t, triton_t, flows))

    load = os.getloadavg()[0]
    print(f"\nTriton overhead on {args.device} (memory {args.memory_dtype}), "
          f"{size[0]}x{size[1]}, 2 objects, {args.frames} frames "
          f"(median of the last {args.frames - WARMUP}), torch threads {args.threads} on both "
          f"sides, {os.cpu_count()} CPUs, load average {load:.1f}")  # fmt: skip
    print(
        f"{'config':<8}{'local ms':>10}{'triton ms':>11}{'ratio':>8}{'+ms':>8}  "
        + "".join(f"{f'{n} sess f/s':>13}" for n in args.sessions)
        + f"{'max batch':>11}"
    )
    for config, local_t, triton_t, flows in rows:
        lm, tm = statistics.median(local_t) * 1e3, statistics.median(triton_t) * 1e3
        print(f"{config:<8}{lm:>10.1f}{tm:>11.1f}{tm / lm:>8.2f}{tm - lm:>8.1f}  "
              + "".join(f"{flows[n][0]:>13.1f}" for n in args.sessions)
              + f"{max(b for _, b in flows.values()):>11}")  # fmt: skip
    print(f"\ncommand: python benchmarks/triton_overhead.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
