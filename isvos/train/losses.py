"""Losses (spec §1.12).

VOS branch: bootstrapped cross-entropy (hardest top-p pixels, p annealed from 1 to 0.15)
plus dice, 0.5 : 0.5 (AOT / JointFormer). Instance branch: Hungarian matching of the N
queries to the class-agnostic instance masks of the frame, then class CE (no-object weight
0.1) + mask BCE + dice, weights 2 / 5 / 5 (Mask2Former), on every decoder layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class BootstrapSchedule:
    """Plain CE until ``start``; top-p then falls linearly to ``final_p`` at ``end``."""

    start: int = 2000
    end: int = 7000
    final_p: float = 0.15

    def top_p(self, step: int) -> float:
        if step < self.start:
            return 1.0
        if step >= self.end:
            return self.final_p
        fraction = (step - self.start) / max(self.end - self.start, 1)
        return 1.0 - (1.0 - self.final_p) * fraction


def bootstrapped_ce(logits: torch.Tensor, target: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits [C, H, W]; target [H, W] int64 -> mean CE over the hardest ``top_p`` pixels."""
    raw = F.cross_entropy(logits[None], target[None], reduction="none").flatten()
    if top_p >= 1.0:
        return raw.mean()
    k = max(int(raw.numel() * top_p), 1)
    return raw.topk(k).values.mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """probs, target [O, H, W] -> mean over objects of 1 - (2 sum pg + 1) / (sum p + sum g + 1)."""
    p = probs.flatten(1)
    g = target.flatten(1).to(p.dtype)
    numerator = 2 * (p * g).sum(1) + 1
    denominator = p.sum(1) + g.sum(1) + 1
    return (1 - numerator / denominator).mean()


@dataclass(frozen=True)
class InstanceLossWeights:
    cls: float = 2.0
    mask_bce: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1


def _pairwise_mask_costs(
    mask_logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """mask_logits [N, P]; targets [G, P] -> BCE and dice costs [N, G]."""
    targets = targets.to(mask_logits.dtype)
    pos = F.binary_cross_entropy_with_logits(
        mask_logits, torch.ones_like(mask_logits), reduction="none"
    )
    neg = F.binary_cross_entropy_with_logits(
        mask_logits, torch.zeros_like(mask_logits), reduction="none"
    )
    bce = (pos @ targets.t() + neg @ (1 - targets).t()) / mask_logits.shape[1]
    probs = mask_logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    dice = 1 - (numerator + 1) / (denominator + 1)
    return bce, dice


def instance_loss(
    class_logits: list[torch.Tensor],
    mask_logits: list[torch.Tensor],
    instance_masks: list[torch.Tensor],
    weights: InstanceLossWeights = InstanceLossWeights(),
) -> torch.Tensor:
    """Deep-supervised set loss.

    class_logits: per layer [B, N, K+1]; mask_logits: per layer [B, N, H4, W4];
    instance_masks: per image [G, H4, W4] bool (G may be 0). Class 0 is "object".
    """
    total = class_logits[0].new_zeros(())
    for layer_classes, layer_masks in zip(class_logits, mask_logits, strict=True):
        for b, targets in enumerate(instance_masks):
            cls = layer_classes[b]  # [N, K+1]
            no_object = cls.shape[1] - 1
            empty_weight = torch.ones(cls.shape[1], device=cls.device)
            empty_weight[no_object] = weights.no_object
            target_classes = torch.full((cls.shape[0],), no_object, device=cls.device)
            if targets.shape[0] > 0:
                flat_logits = layer_masks[b].flatten(1)
                flat_targets = targets.flatten(1)
                bce, dice = _pairwise_mask_costs(flat_logits, flat_targets)
                prob_object = cls.softmax(-1)[:, 0:1]
                cost = weights.mask_bce * bce + weights.dice * dice - weights.cls * prob_object
                rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
                rows_t = torch.as_tensor(np.asarray(rows), device=cls.device)
                cols_t = torch.as_tensor(np.asarray(cols), device=cls.device)
                target_classes[rows_t] = 0
                matched = flat_logits[rows_t]
                matched_targets = flat_targets[cols_t].to(matched.dtype)
                total = total + weights.mask_bce * F.binary_cross_entropy_with_logits(
                    matched, matched_targets
                )
                total = total + weights.dice * dice_loss(matched.sigmoid(), matched_targets)
            total = total + weights.cls * F.cross_entropy(cls, target_classes, weight=empty_weight)
    return total / (len(class_logits) * max(len(instance_masks), 1))
