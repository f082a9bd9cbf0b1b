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


def test_proposals_and_a_revision_on_the_triton_backend(
    triton_server, redis_server, example_clip, scripted_engine, tmp_path
):
    """``POST /v1/proposals`` answered by a Triton worker equals the local engine on the same
    graphs; a revision resumes on the server from the record before its frame."""
    import asyncio

    import av

    from service.backends.local import LocalBackend
    from service.media.masks import encode_indexed_png, read_indexed_png
    from service.proposals import ProposalQuery, propose_image
    from tests.conftest import REPO

    video, masks = example_clip
    settings = make_settings(redis_server.url, tmp_path, backend={
        "kind": "triton", "triton_urls": [triton_server.url]})  # fmt: skip
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, tmp_path).wait_started()
    try:
        with gateway.client() as http:
            job = submit(http, video, [masks], {"size": 96, "outputs": ["png_zip"]}).json()
            remote = http.post("/v1/proposals", data={"job_id": job["id"], "frame": "5",
                                                      "x": "150", "y": "110"}).json()  # fmt: skip
            assert wait_for(http, job["id"], timeout=180)["status"] == "succeeded"
            before = [http.get(f"/v1/jobs/{job['id']}/frames/{i}.png").content for i in range(72)]
            fix = encode_indexed_png(read_indexed_png(REPO / "examples/shapes_gt/00030.png"))
            revised = http.post(f"/v1/jobs/{job['id']}/revisions", data={"frame": "30"},
                                files={"masks": ("fix.png", fix)})  # fmt: skip
            assert revised.status_code == 202, revised.text
            done = wait_for(http, job["id"], timeout=180)
            after = [http.get(f"/v1/jobs/{job['id']}/frames/{i}.png").content for i in range(72)]
    finally:
        worker.stop()
        gateway.stop()
    assert done["status"] == "succeeded" and done["revision"] == 1
    assert done["steps"] - done["revisions"][0]["steps_before"] == 72 - 30
    assert after[:30] == before[:30] and after[30:] != before[30:]

    with av.open(str(video)) as container:
        frame = [f for i, f in zip(range(6), container.decode(video=0), strict=False)][-1]
    image = frame.to_ndarray(format="rgb24")
    backend = LocalBackend(scripted_engine)
    query = ProposalQuery("x", 0.0, 96, point=(150, 110), job_id=job["id"], frame=5)
    try:
        local = asyncio.run(propose_image(backend, image, query, 96))
    finally:
        backend.shutdown()
    assert remote["proposals"] and remote == local.model_dump()
