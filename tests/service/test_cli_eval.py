"""`isvos eval`: the DAVIS protocol over folders, and --run with a baseline and the model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.media.masks import write_indexed_png
from tests.conftest import TINY_CHECKPOINT
from tests.service.conftest import write_video

pytestmark = pytest.mark.timeout(180)
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip):
    """A davis16-layout dataset (videos/<seq>.mp4, masks/<seq>/00000.png) of two sequences."""
    frames, labels = clip
    root = tmp_path_factory.mktemp("davis")
    (root / "videos").mkdir()
    for name, rows in (("shapes-a", slice(0, 12)), ("shapes-b", slice(10, 22))):
        write_video(root / "videos" / f"{name}.mp4", frames[rows])
        folder = root / "masks" / name
        folder.mkdir(parents=True)
        for i, label in enumerate(labels[rows]):
            write_indexed_png(folder / f"{i:05d}.png", label)
    return root


def test_eval_ground_truth_against_itself_scores_one(dataset, tmp_path):
    out = tmp_path / "scores.json"
    result = runner.invoke(
        app, ["eval", "--gt", str(dataset), "--pred", str(dataset / "masks"), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "shapes-a" in result.output and "Overall" in result.output
    scores = json.loads(out.read_text())
    assert scores["J&F"] == pytest.approx(1.0) and scores["J"] == pytest.approx(1.0)


def test_eval_run_baseline_and_model(dataset, tmp_path):
    copy = tmp_path / "copy"
    result = runner.invoke(
        app,
        ["eval", "--gt", str(dataset), "--pred", str(copy), "--run", "--method",
         "copy_first_frame", "--json", str(tmp_path / "copy.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        ["eval", "--gt", str(dataset), "--pred", str(model), "--run", "--config", "tiny",
         "--checkpoint", str(TINY_CHECKPOINT), "--size", "96", "--json", str(tmp_path / "m.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    copy_score = json.loads((tmp_path / "copy.json").read_text())["J&F"]
    model_score = json.loads((tmp_path / "m.json").read_text())["J&F"]
    assert 0.0 <= copy_score < 1.0
    assert model_score > copy_score  # the objects move: tracking beats copying
    assert len(list((model / "shapes-a").glob("*.png"))) == 12


def test_eval_missing_prediction_is_a_clear_error(dataset, tmp_path):
    result = runner.invoke(app, ["eval", "--gt", str(dataset), "--pred", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_shard_command_round_trip(tmp_path):
    import torch

    from isvos.model import build

    manifest = tmp_path / "tiny.manifest.json"
    result = runner.invoke(
        app, ["shard", str(TINY_CHECKPOINT), "--out", str(manifest), "--max-mb", "0.2"]
    )
    assert result.exit_code == 0, result.output
    shards = sorted(tmp_path.glob("tiny.part*.pt"))
    assert len(shards) >= 2 and all(s.stat().st_size <= 200_000 for s in shards)
    a, b = build("tiny", TINY_CHECKPOINT), build("tiny", manifest)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_the_shipped_lite_checkpoint_is_the_default_and_loads_strictly():
    from isvos.model import build, model_hash
    from service.checkpoints import default_checkpoint

    path = default_checkpoint("lite")
    assert path is not None and path.endswith("lite.pt")
    assert model_hash(build("lite", path)) == "fe248342f5cb9c61"
