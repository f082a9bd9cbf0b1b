"""Training away from here: the bundle carries the pack and the backbone weights, chunks
resume exactly, and the exported shards load strictly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from isvos.model import build
from isvos.model.backbones import LITE0_WEIGHTS_ENV, EfficientNetLite0
from isvos.train.bundle import BACKBONE_NAME, PACK_NAME, export_shards, make_bundle, run_chunk
from isvos.train.data import PackedDataset
from isvos.train.loop import TrainOptions, load_train_state, train

pytestmark = pytest.mark.timeout(240)


def test_the_bundle_holds_the_pack_and_the_backbone_weights(
    davis_root: Path, tmp_path, monkeypatch
):
    sizes = make_bundle(davis_root, tmp_path / "bundle", short_side=48)
    assert BACKBONE_NAME in sizes and any(name.startswith(PACK_NAME) for name in sizes)
    assert len(PackedDataset(tmp_path / "bundle" / PACK_NAME).sequences) == 3
    package = EfficientNetLite0()
    assert package.load_imagenet_weights()
    monkeypatch.setenv(LITE0_WEIGHTS_ENV, str(tmp_path / "bundle" / BACKBONE_NAME))
    from_bundle = EfficientNetLite0()
    assert from_bundle.load_imagenet_weights()  # strict: every key, nothing more
    for key, value in package.state_dict().items():
        assert value.equal(from_bundle.state_dict()[key]), key


def _options(out: Path, steps: int) -> TrainOptions:
    return TrainOptions(config="tiny", data="synthetic", out=str(out), steps=steps,
                        batch_size=2, num_frames=3, crop_size=48, lr=1e-3, warmup_steps=2,
                        threads=1, eval_every=0, ema_decay=0.9)  # fmt: skip


def test_chunks_resume_exactly_and_export_loadable_shards(tmp_path):
    chunked = _options(tmp_path / "chunked", 3)
    steps = [run_chunk(chunked, seconds=1e-3)[1] for _ in range(3)]  # one step per chunk
    assert steps == [1, 2, 3]
    straight = train(replace(_options(tmp_path / "straight", 3), save_every_s=0.0))
    a = load_train_state(tmp_path / "chunked" / "last.pt")
    b = load_train_state(straight / "last.pt")
    for key, value in a["checkpoint"]["state_dict"].items():
        assert torch.allclose(value, b["checkpoint"]["state_dict"][key], atol=1e-6), key
    for key, value in a["ema"]["shadow"].items():
        assert torch.allclose(value, b["ema"]["shadow"][key], atol=1e-6), key

    manifest = export_shards(tmp_path / "chunked", tmp_path / "out" / "tiny.manifest.json",
                             shard_bytes=200_000)  # fmt: skip
    shards = sorted((tmp_path / "out").glob("tiny.part*.pt"))
    assert len(shards) >= 2 and all(s.stat().st_size <= 200_000 for s in shards)
    model = build("tiny", manifest)  # strict load
    for key, value in a["ema"]["shadow"].items():  # the average is what ships
        assert model.state_dict()[key].equal(value.cpu()), key
