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
