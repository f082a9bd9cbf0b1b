"""Throughput of the `isvos segment` pipeline against the bare engine, in one run.

    python benchmarks/segment_cli.py [--video PATH --masks PNG] [--config lite] [--size 240]

Three figures, each the median of ``--repeats`` alternating runs on the same frames:
decode alone (PyAV, RGB arrays), the bare engine stepping pre-decoded, pre-resized frames,
and the whole pipeline (background decode, resize, step, upsample to the original size,
indexed PNG per frame). The ratio pipeline / bare engine must stay >= 0.95.
Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from isvos.config import get_config
from isvos.engine import EagerRunner, Engine
from isvos.model import build
from isvos.processing import masks_from_labels, processing_size, resize_frame, resize_labels
from service.backends.local import LocalBackend
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
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    short_side = args.size or get_config(args.config).default_short_side
    info = probe_video(args.video)
    first = read_indexed_png(args.masks)
    psize = processing_size(info.height, info.width, short_side)
    engine = Engine(EagerRunner(build(args.config)))
    backend = LocalBackend(engine)

    def decode() -> list[np.ndarray]:
        return [f.image for f in iter_frames(args.video, end=args.frames)]

    frames = decode()
    small = [resize_frame(f, psize) for f in frames]
    masks = masks_from_labels(resize_labels(first, psize))

    def bare() -> None:
        session = engine.open_session(psize)
        for i, image in enumerate(small):
            session.step(i, image, masks if i == 0 else None)

    def pipeline() -> None:
        with tempfile.TemporaryDirectory() as out:
            request = SegmentRequest(
                video=args.video, masks=args.masks, out_dir=Path(out), short_side=short_side,
                end=args.frames,
            )  # fmt: skip
            segment_video(backend, request)

    timings: dict[str, list[float]] = {"decode": [], "bare engine": [], "segment pipeline": []}
    bare()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("decode", decode), ("bare engine", bare), ("segment pipeline", pipeline)):
            started = time.perf_counter()
            fn()
            timings[name].append(len(frames) / (time.perf_counter() - started))
    print(
        f"video {args.video.name} {info.width}x{info.height}, {len(frames)} frames, "
        f"config {args.config}, processing {psize[1]}x{psize[0]}, threads {args.threads}"
    )
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, value in medians.items():
        print(f"  {name:<17} {value:8.1f} frames/s (median of {args.repeats})")
    ratio = medians["segment pipeline"] / medians["bare engine"]
    print(f"  pipeline / bare engine = {ratio:.3f}")


if __name__ == "__main__":
    main()
