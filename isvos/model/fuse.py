"""Inference-only BatchNorm folding: Conv2d followed by BatchNorm2d becomes one Conv2d.

Applied to a copy of the network by the runners and the export (never to a training model);
the weights' identity (``model_hash``) is taken before folding.
"""

from __future__ import annotations

import torch
from torch import nn


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (bias - bn.running_mean) * scale + bn.bias.detach()
        conv.bias = nn.Parameter(new_bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d among a module's children."""
    for module in list(model.modules()):
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                module._modules[second] = nn.Identity()
    return model
