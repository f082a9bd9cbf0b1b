"""Throughput of the `isvos segment` pipeline against the bare engine, in one run.

    python benchmarks/segment_cli.py [--video PATH --masks PNG] [--config lite] [--size 240]
                                     [--threads 2] [--device cpu|cuda]

Figures, each the median of ``--repeats`` runs on the same frames: decode alone (PyAV,
RGB arrays; single-threaded as ``isvos segment`` decodes beside a CPU model, and with
FFmpeg's threads), the bare engine stepping pre-decoded, pre-resized frames, and the
whole pipeline (background decode, resize, step, upsample to the original size, indexed
PNG per frame, setup included). Bare and pipeline runs alternate in pairs, their order
swapped every repeat, and the ratio pipeline / bare engine is the median of the paired
ratios (drift of a shared machine cancels within a pair); it must stay >= 0.95.
"I/O alone" is the same pipeline with a backend that replays the bare engine's recorded
outputs: the CPU the pipeline adds per frame, which the model must share its cores with.
Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from isvos.config import get_config
from isvos.processing import masks_from_labels, processing_size, resize_frame, resize_labels
from service.backends.base import SessionHandle, StepOutput
from service.backends.local import LocalBackend
from service.checkpoints import resolve_checkpoint
from service.media.masks import read_indexed_png
from service.media.video import iter_frames, probe_video
from service.segment import SegmentRequest, segment_video

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "davis16" / "val" / "videos" / "blackswan.mp4"
DEFAULT_MASK = (
    REPO.parent / "shared" / "data" / "davis16" / "val" / "masks" / "blackswan" / "00000.png"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--masks", type=Path, default=DEFAULT_MASK)
    parser.add_argument("--config", default="lite")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="default: the whole video")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped one; 'random'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = (
        None if args.checkpoint == "random" else resolve_checkpoint(args.config, args.checkpoint)
    )
    short_side = args.size or get_config(args.config).default_short_side
    info = probe_video(args.video)
    first = read_indexed_png(args.masks)
    psize = processing_size(info.height, info.width, short_side)
    # Built and stepped on the backend's engine thread, as `isvos segment` runs it: torch's
    # OpenMP team is per calling thread, and a second team throttles both (caller_thread).
    backend = LocalBackend.from_model(args.config, checkpoint, device=args.device)
    engine = backend.engine
    decode_threads = 1 if args.device == "cpu" else 0  # as `isvos segment` chooses

    def decode(threads: int) -> list[np.ndarray]:
        return [f.image for f in iter_frames(args.video, end=args.frames, threads=threads)]

    frames = decode(1)
    small = [resize_frame(f, psize) for f in frames]
    masks = masks_from_labels(resize_labels(first, psize))

    def bare_steps() -> None:
        session = engine.open_session(psize)
        for i, image in enumerate(small):
            session.step(i, image, masks if i == 0 else None)

    def bare() -> None:
        # On the backend's engine thread, where the pipeline's steps run: torch's OpenMP
        # team is per calling thread, and a second team would spin against the first.
        backend.on_engine_thread(bare_steps)

    def pipeline(through=backend) -> None:
        with tempfile.TemporaryDirectory() as out:
            request = SegmentRequest(
                video=args.video, masks=args.masks, out_dir=Path(out), short_side=short_side,
                end=args.frames, decode_threads=decode_threads,
            )  # fmt: skip
            asyncio.run(segment_video(through, request))

    def record_steps() -> list:
        session = engine.open_session(psize)
        return [session.step(i, image, masks if i == 0 else None) for i, image in enumerate(small)]

    replay = _ReplayBackend(backend.on_engine_thread(record_steps))

    def frames_per_second(fn) -> float:
        started = time.perf_counter()
        fn()
        return len(frames) / (time.perf_counter() - started)

    timings: dict[str, list[float]] = {
        "decode (1 thread)": [], "decode (FFmpeg threads)": [],
        "I/O alone": [], "bare engine": [], "segment pipeline": [],
    }  # fmt: skip
    ratios = []
    bare()  # warm-up
    pipeline()
    for repeat in range(args.repeats):
        timings["decode (1 thread)"].append(frames_per_second(lambda: decode(1)))
        timings["decode (FFmpeg threads)"].append(frames_per_second(lambda: decode(0)))
        timings["I/O alone"].append(frames_per_second(lambda: pipeline(replay)))
        pair = {}
        order = ("bare engine", "segment pipeline")
        for name in order if repeat % 2 == 0 else order[::-1]:
            pair[name] = frames_per_second(bare if name == "bare engine" else pipeline)
            timings[name].append(pair[name])
        ratios.append(pair["segment pipeline"] / pair["bare engine"])
    print(
        f"video {args.video.name} {info.width}x{info.height}, {len(frames)} frames, "
        f"config {args.config}, processing {psize[1]}x{psize[0]}, threads {args.threads}, "
        f"device {args.device}"
    )
    for name, values in timings.items():
        print(f"  {name:<24} {statistics.median(values):8.1f} frames/s (median of {args.repeats})")
    print(
        f"  pipeline / bare engine = {statistics.median(ratios):.3f} (median of {args.repeats} "
        f"paired runs; min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    io_ms = 1000 / statistics.median(timings["I/O alone"])
    step_ms = 1000 / statistics.median(timings["bare engine"])
    print(
        f"  I/O alone {io_ms:.1f} ms/frame = {100 * io_ms / step_ms:.1f}% of a bare step "
        f"({step_ms:.1f} ms); if every I/O millisecond stalls a model that holds every core, "
        f"the ratio is {step_ms / (step_ms + io_ms):.3f}"
    )


class _ReplayBackend:
    """A backend that returns recorded step outputs: the pipeline's own cost, no model."""

    name = "replay"

    def __init__(self, outputs) -> None:
        self.outputs = outputs

    async def open(self, session_id, processing_size, options=None, **_):
        return SessionHandle(session_id, "replay", processing_size)

    async def step(self, handle, frame_index, image, masks=None):
        out = self.outputs[frame_index]
        return StepOutput(out.frame_index, out.object_ids, out.probabilities, out.labels)

    async def close(self, handle) -> None:
        pass


if __name__ == "__main__":
    main()
