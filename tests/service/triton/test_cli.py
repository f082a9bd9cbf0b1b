"""`isvos segment --backend triton` against the shared server: the masks of the local run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from service.cli import app
from tests.conftest import TINY_CHECKPOINT

pytestmark = pytest.mark.timeout(120)
TINY = ["--config", "tiny", "--checkpoint", str(TINY_CHECKPOINT), "--threads", "1"]


def _masks(folder: Path) -> np.ndarray:
    return np.stack([np.array(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))])


def test_segment_through_triton_matches_local(triton_server, clip_video, tmp_path):
    video, _, first = clip_video
    runner = CliRunner()
    common = [str(video), "--masks", str(first), "--size", "96", *TINY]
    triton = ["--backend", "triton", "--triton-url", triton_server.url]
    remote = runner.invoke(app, ["segment", *common, "--out", str(tmp_path / "remote"), *triton])
    assert remote.exit_code == 0, remote.output
    local = runner.invoke(app, ["segment", *common, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    a, b = _masks(tmp_path / "remote"), _masks(tmp_path / "local")
    assert a.shape == b.shape and a.shape[0] == 20
    # Same engine, same graphs' weights; the local run uses the eager modules and fp32
    # probabilities, so a few border pixels may differ after upsampling.
    assert (a == b).mean() > 0.999
    bad = runner.invoke(app, ["segment", *common, "--out", str(tmp_path / "x"),
                              "--backend", "nope"])  # fmt: skip
    assert bad.exit_code == 2 and "unknown backend" in bad.output
