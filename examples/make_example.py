"""Generate the synthetic example clip ``shapes.mp4`` and its masks (deterministic).

Two textured shapes (id 1: striped ellipse, id 2: checkered rounded square, drawn on
top) move over a textured static background. Writes, into ``--out-dir``:

* ``shapes.mp4``            H.264 video (default 3 s, 24 fps, 320x240)
* ``shapes_first_frame.png`` indexed (DAVIS palette) mask of frame 0, ids 1 and 2
* ``shapes_gt/00000.png...`` indexed ground-truth masks for every frame

Usage: ``python examples/make_example.py [--out-dir examples] [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # allow running as a plain script from a checkout
    sys.path.insert(0, str(REPO))

from service.media.masks import write_indexed_png  # noqa: E402


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth coloured blobs plus mild grain: textured but compressible."""
    coarse = rng.random((height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (0.5 + 0.5 * np.sin(xx / 23.0) * np.cos(yy / 17.0))[..., None]
    base = np.array([70, 110, 80], np.float32) + 60 * blobs + 25 * ramp
    grain = rng.normal(0, 3, (height, width, 1)).astype(np.float32)
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def _local(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


def render_frame(
    background: np.ndarray, t: float, duration: float
) -> tuple[np.ndarray, np.ndarray]:
    """RGB frame and its label map at time ``t`` seconds."""
    h, w = background.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = 2 * np.pi * t / duration
    image = background.astype(np.float32)
    labels = np.zeros((h, w), np.uint8)

    # Object 1: striped ellipse on a figure-of-eight path.
    cx1 = w / 2 + 0.3 * w * np.sin(phase)
    cy1 = h / 2 + 0.18 * h * np.sin(2 * phase)
    u, v = _local(xx, yy, cx1, cy1, 0.6 * phase)
    m1 = (u / (0.12 * w)) ** 2 + (v / (0.11 * h)) ** 2 <= 1.0
    stripes = (0.5 + 0.5 * np.sin(u / 2.5))[..., None]
    tex1 = np.array([230, 120, 30], np.float32) * (0.6 + 0.4 * stripes)
    image[m1] = tex1[m1]
    labels[m1] = 1

    # Object 2: checkered rounded square on an ellipse path, drawn on top (occludes 1).
    cx2 = w / 2 - 0.28 * w * np.cos(phase)
    cy2 = h / 2 + 0.25 * h * np.sin(phase + 0.8)
    u, v = _local(xx, yy, cx2, cy2, -0.9 * phase)
    half = 0.08 * w
    m2 = (np.abs(u) / half) ** 4 + (np.abs(v) / half) ** 4 <= 1.0
    checker = ((np.floor(u / 6) + np.floor(v / 6)) % 2)[..., None]
    tex2 = np.where(checker > 0, [40, 90, 220], [170, 220, 250]).astype(np.float32)
    image[m2] = tex2[m2]
    labels[m2] = 2
    return np.clip(image, 0, 255).astype(np.uint8), labels


def main(argv: list[str] | None = None) -> None:
    """Write the example video and masks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    args = ap.parse_args(argv)

    out: Path = args.out_dir
    gt_dir = out / "shapes_gt"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for old in gt_dir.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(args.seed)
    background = make_background(rng, args.width, args.height)
    n_frames = round(args.seconds * args.fps)

    with av.open(str(out / "shapes.mp4"), mode="w", options={"movflags": "+faststart"}) as c:
        stream = c.add_stream("libx264", rate=Fraction(args.fps))
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"
        stream.options = {"crf": "23", "preset": "medium", "threads": "1"}
        for i in range(n_frames):
            image, labels = render_frame(background, i / args.fps, args.seconds)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, args.fps)
            for packet in stream.encode(frame):
                c.mux(packet)
            write_indexed_png(gt_dir / f"{i:05d}.png", labels)
            if i == 0:
                write_indexed_png(out / "shapes_first_frame.png", labels)
        for packet in stream.encode():
            c.mux(packet)
    total = sum(p.stat().st_size for p in [out / "shapes.mp4", *gt_dir.glob("*.png")])
    print(f"wrote {n_frames} frames to {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
