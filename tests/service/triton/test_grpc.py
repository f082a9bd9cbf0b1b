"""A Track stream served on the Triton backend: masks equal to `isvos segment --backend
triton` on the same video and config; several streams at once batch on the server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from service.rpc.client import result_labels
from service.rpc.gen import segmentation_pb2 as pb
from tests.helpers.stack import GrpcProcess, make_settings
from tests.service.rpc.conftest import stream
from tests.service.triton.conftest import segment_reference

pytestmark = pytest.mark.timeout(240)


def test_streams_on_the_triton_backend(triton_server, redis_server, example_clip, tmp_path):
    from service.media.video import iter_frames

    video, masks = example_clip
    frames = [f.image for f in iter_frames(video)]
    first = np.array(Image.open(masks))
    settings = make_settings(redis_server.url, tmp_path, grpc={"port": 0}, backend={
        "kind": "triton", "triton_urls": [triton_server.url]})  # fmt: skip
    server = GrpcProcess(settings, tmp_path)
    try:
        with ThreadPoolExecutor(3) as pool:
            runs = list(pool.map(lambda _: stream(server.target, frames, {0: first},
                                                  open_options=pb.Open(short_side=96))[0],
                                 range(3)))  # fmt: skip
    finally:
        server.stop()
    reference = tmp_path / "reference"
    segment_reference(video, masks, reference, triton_server.url)
    for results in runs:
        assert [r.index for r in results] == list(range(72))
        for r in results:
            expected = np.array(Image.open(reference / "masks" / f"{r.index:05d}.png"))
            np.testing.assert_array_equal(result_labels(r), expected, f"frame {r.index}")
