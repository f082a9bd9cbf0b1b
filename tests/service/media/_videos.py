"""Small synthetic test videos written with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_value(i: int) -> int:
    """Grey level that encodes frame ``i`` (decodes back within a few levels)."""
    return 10 + 20 * i


def pattern(width: int, height: int, i: int) -> np.ndarray:
    """Frame ``i``: uniform grey ``frame_value(i)`` with a white 16x12 top-left block."""
    img = np.full((height, width, 3), frame_value(i), np.uint8)
    img[:12, :16] = 255
    return img


def write_video(
    path: Path,
    width: int = 64,
    height: int = 48,
    frames: int = 10,
    fps: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    audio: bool = False,
    fmt: str | None = None,
    noise: bool = False,
) -> Path:
    """Write ``frames`` frames of ``pattern`` (optionally rotation, audio, or noisy pixels
    so that every frame is large and a cut file loses frames mid-stream)."""
    rng = np.random.default_rng(0)
    options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path), mode="w", format=fmt, options=options) as c:
        vs = c.add_stream(codec, rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        if codec == "libx265":
            vs.options = {"x265-params": "log-level=error"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = c.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(frames):
            img = pattern(width, height, i)
            if noise:
                img = rng.integers(0, 256, img.shape, dtype=np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if aus is not None:
            n = 16000 * frames // fps
            t = np.arange(n, dtype=np.float32) / 16000
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            for p in aus.encode(af):
                c.mux(p)
            for p in aus.encode():
                c.mux(p)
    return path
