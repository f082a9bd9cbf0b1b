"""BatchNorm folding (``isvos.model.fuse``): the folded runner computes what the unfolded one
does, stage by stage, and no BatchNorm is left in the folded graphs."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from isvos.config import get_config
from isvos.engine import EagerRunner
from isvos.model import build
from isvos.model.fuse import fold_batchnorm

pytestmark = pytest.mark.timeout(120)

# fp32: folding reorders a multiply-add per channel, so outputs move by rounding only. Observed
# max |folded - unfolded| / max(1, max |unfolded|) over all stages: 1.1e-6 (tiny checkpoint),
# 5.8e-7 (lite, random BN statistics); dropping lite's BatchNorms instead gives 1.4.
# (The tiny checkpoint's running statistics are still 0 / 1, training froze them: only the
# lite case exercises the running-mean term.)
TOLERANCE = 1e-4


def batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Running statistics and affine weights away from (0, 1), so folding changes weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=generator))
                module.bias.copy_(0.2 * torch.randn(c, generator=generator))


def stage_outputs(runner: EagerRunner, image: torch.Tensor, inputs: dict) -> list[torch.Tensor]:
    """Every stage's outputs on fixed inputs (the same features/memory go to both runners)."""
    features = runner.encode_frame(image)
    logits = runner.read_decode(
        inputs["features"], inputs["memory_key"], inputs["memory_value"], 20, 4096
    )
    values = runner.encode_value(image, inputs["masks"], inputs["foreground"], inputs["f16"])
    return [*features, logits, values]


def reference_inputs(runner: EagerRunner, image: torch.Tensor) -> dict:
    """Features, two objects' masks and a one-frame memory, computed by ``runner``."""
    h, w = image.shape[-2:]
    masks = torch.zeros(2, h, w)
    masks[0, h // 4 : h // 2, w // 4 : w // 2] = 1
    masks[1, h // 2 :, w // 2 :] = 1
    foreground = masks.sum(0).clamp(max=1)
    features = runner.encode_frame(image)
    values = runner.encode_value(image, masks, foreground, features[1])
    return {
        "features": features,
        "masks": masks,
        "foreground": foreground,
        "f16": features[1],
        "memory_key": features[0][0].flatten(1),
        "memory_value": values.flatten(2),
    }


def max_relative_error(folded: list[torch.Tensor], unfolded: list[torch.Tensor]) -> float:
    worst = 0.0
    for a, b in zip(folded, unfolded, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(b.abs().max()))
        worst = max(worst, float((a.float() - b.float()).abs().max()) / scale)
    return worst


def compare(model: nn.Module, image: torch.Tensor) -> float:
    assert batchnorms(model) > 0
    unfolded = EagerRunner(copy.deepcopy(model), fold_bn=False)
    folded = EagerRunner(model, fold_bn=True)
    assert batchnorms(unfolded.graphs) == batchnorms(model)
    assert batchnorms(folded.graphs) == 0, "folding left BatchNorm modules"
    assert batchnorms(model) > 0, "folding touched the caller's model"
    assert folded.model_hash == unfolded.model_hash
    inputs = reference_inputs(unfolded, image)
    error = max_relative_error(
        stage_outputs(folded, image, inputs), stage_outputs(unfolded, image, inputs)
    )
    assert error <= TOLERANCE, error
    return error


def test_folding_preserves_the_tiny_checkpoint(tiny_model, clip):
    frames, _ = clip
    image = torch.from_numpy(np.ascontiguousarray(frames[5])).permute(2, 0, 1)[None] / 255.0
    compare(tiny_model, image.float())


def test_folding_preserves_lite_with_random_batchnorm_statistics():
    torch.manual_seed(0)
    config = dataclasses.replace(get_config("lite"), pretrained_backbone=False)
    model = build(config)
    randomise_batchnorm(model, seed=1)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    compare(model, image)
    # The statistics matter: dropping the BatchNorms without folding them in is far off.
    unfolded = EagerRunner(copy.deepcopy(model), fold_bn=False)
    dropped = copy.deepcopy(model)
    for module in list(dropped.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    dropped_runner = EagerRunner(dropped, fold_bn=False)
    error = max_relative_error(
        list(dropped_runner.encode_frame(image)), list(unfolded.encode_frame(image))
    )
    assert error > 100 * TOLERANCE, error


def test_fold_batchnorm_on_a_conv_bn_pair_matches_eval_mode():
    """The folding arithmetic itself, on a conv with and without a bias."""
    torch.manual_seed(3)
    for bias in (False, True):
        block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6))
        randomise_batchnorm(block, seed=4)
        block.eval()
        x = torch.randn(2, 4, 9, 11)
        expected = block(x)
        folded = fold_batchnorm(copy.deepcopy(block))
        assert isinstance(folded[1], nn.Identity)
        assert torch.allclose(folded(x), expected, atol=1e-5), bias
