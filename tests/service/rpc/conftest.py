"""A gRPC server process (tiny model, local backend) shared by a module, the example clip's
frames and masks, and a blocking helper that streams them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_CHECKPOINT
from tests.helpers.stack import GrpcProcess, make_settings

GT = REPO / "examples" / "shapes_gt"


@pytest.fixture(scope="module")
def grpc_server(redis_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("grpc")
    server = GrpcProcess(make_settings(redis_server.url, data, grpc={"port": 0}), data)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clip_frames(example_clip):
    from service.media.video import iter_frames

    video, first = example_clip
    labels = np.array(Image.open(first))
    return [f.image for f in iter_frames(video)], labels


def gt(index: int) -> np.ndarray:
    return np.array(Image.open(GT / f"{index:05d}.png"))


def stream(target: str, frames, prompts: dict, *, open_options=None, remove=None, **client):
    """Results (a list) of streaming ``frames`` with ``prompts`` ({index: label map})."""
    from service.rpc.client import SendFrame, TrackClient

    async def gen():
        for i, image in enumerate(frames):
            yield SendFrame(i, image, prompts.get(i), remove=tuple((remove or {}).get(i, ())))

    async def run():
        async with TrackClient(target, open_options=open_options, **client) as c:
            return [r async for r in c.track(gen())], c

    return asyncio.run(run())


def segment_reference(video: Path, prompts: dict, out: Path, size: int = 96) -> Path:
    """`isvos segment` with ``prompts`` (a DAVIS-style folder of indexed PNGs), 1 thread."""
    from service.media.masks import write_indexed_png

    folder = out / "prompts"
    folder.mkdir(parents=True)
    for index, labels in prompts.items():
        write_indexed_png(folder / f"{index:05d}.png", labels)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(folder),
         "--out", str(out / "ref"), "--size", str(size), "--config", "tiny", "--checkpoint",
         str(TINY_CHECKPOINT), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out / "ref" / "masks"
