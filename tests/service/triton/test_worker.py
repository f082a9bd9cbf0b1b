"""A job through a worker on the Triton backend (the shared server): several jobs held at
once by one worker, masks equal to `isvos segment --backend triton`."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings, submit, wait_for
from tests.service.triton.conftest import segment_reference

pytestmark = pytest.mark.timeout(240)


def test_jobs_on_the_triton_backend(triton_server, redis_server, example_clip, tmp_path):
    video, masks = example_clip
    settings = make_settings(redis_server.url, tmp_path, backend={
        "kind": "triton", "triton_urls": [triton_server.url], "concurrency": 3})  # fmt: skip
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, tmp_path).wait_started()
    try:
        with gateway.client() as http:
            ids = [submit(http, video, [masks], {"size": 96, "outputs": ["png_zip"]}).json()["id"]
                   for _ in range(3)]  # fmt: skip
            finals = [wait_for(http, i, timeout=180) for i in ids]
            assert [f["status"] for f in finals] == ["succeeded"] * 3, finals
            archives = [http.get(f"/v1/jobs/{i}/result").content for i in ids]
    finally:
        worker.stop()
        gateway.stop()
    # The worker held the three jobs at once (three sessions on the server together).
    starts = sorted(f["started_at"] for f in finals)
    assert starts[-1] < min(f["last_frame_at"] for f in finals)
    reference = tmp_path / "reference"
    segment_reference(video, masks, reference, triton_server.url)
    for archive in archives:
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            assert len(zipped.namelist()) == 72
            for name in zipped.namelist():
                got = np.array(Image.open(io.BytesIO(zipped.read(name))))
                np.testing.assert_array_equal(got, np.array(Image.open(reference / name)), name)
