"""Fixtures for service tests: a small real H.264 video of a synthetic clip and its masks."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def write_video(path: Path, frames: np.ndarray, fps: int = 12, pix_fmt: str = "yuv420p") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def clip_video(tmp_path_factory, clip):
    """(video path, ground-truth labels [T, H, W], first-frame indexed PNG path), 20 frames."""
    from service.media.masks import write_indexed_png

    frames, labels = clip
    folder = tmp_path_factory.mktemp("video")
    video = write_video(folder / "clip.mp4", frames[:20])
    first = folder / "first.png"
    write_indexed_png(first, labels[0])
    return video, labels[:20], first


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory):
    """160 frames at 240x320, two moving objects: several seconds of tiny steps at 240p."""
    from isvos.train.synthetic import synthetic_clip
    from service.media.masks import write_indexed_png

    frames, labels = synthetic_clip(np.random.default_rng(3), num_frames=160, height=240,
                                    width=320, num_objects=2, max_speed=2.0)  # fmt: skip
    folder = tmp_path_factory.mktemp("long")
    video = write_video(folder / "long.mp4", frames)
    first = folder / "first.png"
    write_indexed_png(first, labels[0])
    return video, first


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis of this test run (free port, own data directory, append-only, fsync always)."""
    from service.redis_server import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"), appendfsync="always")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def example_clip():
    """The committed example: 72 frames, 320x240, two shapes, and its first-frame masks."""
    from tests.conftest import REPO

    return REPO / "examples" / "shapes.mp4", REPO / "examples" / "shapes_first_frame.png"
