"""A real Triton server (the nvidia-pytriton wheel's binary, python backend on CPU) serving
the committed tiny checkpoint. One shared server per test session; tests that kill a server
or need other parameters start private ones (marked slow)."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY_CHECKPOINT

if importlib.util.find_spec("pytriton") is None:
    pytest.skip(
        "nvidia-pytriton (the tritonserver binary) is not installed", allow_module_level=True
    )
pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory) -> Path:
    """A copy of model_repo/ (config + model.py) with the tiny checkpoint exported into it."""
    from service.triton_server import exported_repository

    return exported_repository(REPO / "model_repo", tmp_path_factory.mktemp("triton") /
                               "model_repo", "tiny", TINY_CHECKPOINT)  # fmt: skip


def start_server(repo: Path, **kwargs):
    from service.triton_server import start_local_triton

    kwargs.setdefault("parameters", {})
    kwargs["parameters"].setdefault("torch_threads", 1)  # 2 shared cores: no spinning
    return start_local_triton(repo, export_config=None, ready_timeout=90, **kwargs)


@contextlib.contextmanager
def private_server(repo: Path, **kwargs):
    server = start_server(repo, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton_server(triton_repo):
    server = start_server(triton_repo, metrics=True)
    yield server
    server.stop()


def sync_triton(url: str, **kwargs):
    """A blocking ``TritonBackend`` (``SyncBackend``) for tests."""
    from service.backends import SyncBackend
    from service.backends.triton import TritonBackend

    kwargs.setdefault("timeout_s", 60)
    kwargs.setdefault("retry_unavailable_s", 5)
    return SyncBackend(lambda: TritonBackend(url, **kwargs))


@pytest.fixture()
def triton_backend(triton_server):
    backend = sync_triton(triton_server.url)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="session")
def scripted_engine(triton_repo):
    """The engine over the same exported graphs the server runs, in this process."""
    import torch

    from isvos.engine import Engine, ScriptedRunner

    torch.set_num_threads(1)  # as the server's instance (torch_threads)
    return Engine(ScriptedRunner(triton_repo / "isvos" / "1"))


@pytest.fixture()
def local_backend(scripted_engine):
    from service.backends import SyncBackend
    from service.backends.local import LocalBackend

    backend = SyncBackend(lambda: LocalBackend(scripted_engine))
    yield backend
    backend.shutdown()


def raw(backend, kind, corr, *, start=False, end=False, **fields):
    """One request of ``kind`` on sequence ``corr``, without recovery or retries."""
    return backend.run(
        lambda b: b._infer(kind, fields, corr, b.url, start=start, end=end, retry=False)
    )


def run_clip(
    backend, session_id, frames, labels, *, add_at=None, steps=None, handle=None, options=None
):
    """Step ``frames`` through ``backend``: object 1 from frame 0, object 2 from ``add_at``
    (from frame 0 with None). Returns (handle, [StepOutput])."""
    from isvos.processing import masks_from_labels

    size = frames.shape[1:3]
    if handle is None:
        handle = backend.open(session_id, size, options or {"max_objects": 4})
    outputs = []
    indices = range(len(frames)) if steps is None else steps
    for i in indices:
        masks = None
        if i == 0:
            ids = [1] if add_at is not None else [1, 2]
            masks = {o: m for o, m in masks_from_labels(labels[0], ids).items()}
        elif add_at is not None and i == add_at:
            masks = masks_from_labels(labels[i], [2])
        outputs.append(backend.step(handle, i, frames[i], masks))
    return handle, outputs


def assert_same_outputs(a, b, atol=1e-4):
    """Identical label maps; probabilities within ``atol`` plus the fp16 wire format's
    rounding (values within ``atol`` in fp32 can round one fp16 step apart)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.frame_index == y.frame_index
        assert x.object_ids == y.object_ids
        np.testing.assert_array_equal(x.labels, y.labels, err_msg=f"frame {x.frame_index}")
        p, q = x.probabilities.astype(np.float32), y.probabilities.astype(np.float32)
        step = np.spacing(np.maximum(np.abs(p), np.abs(q)).astype(np.float16)).astype(np.float32)
        excess = np.abs(p - q) - (atol + step)
        assert excess.max() <= 0, (
            f"frame {x.frame_index}: probabilities differ by {np.abs(p - q).max():.2e}"
        )


def segment_reference(video: Path, masks: Path, out: Path, triton_url: str, size: int = 96):
    """``isvos segment`` on the Triton backend: what a service run must equal."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "segment", str(video), "--masks", str(masks),
         "--out", str(out), "--size", str(size), "--backend", "triton", "--triton-url",
         triton_url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
