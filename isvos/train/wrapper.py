"""Training forward pass over clips (training behaviour stays out of the network class).

STCN/XMem-style: frame 0's values come from the ground truth; each later frame reads the
memory of all earlier frames (the paper writes every frame to memory during training),
is decoded and soft-aggregated, and its hard prediction is encoded as the next value, as
at inference (DESIGN decision 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from isvos.model.memory_read import aggregate_logits
from isvos.model.network import ISVOS

from .losses import bootstrapped_ce, dice_loss, instance_loss


@dataclass
class ClipLosses:
    total: torch.Tensor
    vos_ce: torch.Tensor
    vos_dice: torch.Tensor
    instance: torch.Tensor


def _one_hot(labels: torch.Tensor, num_objects: int) -> torch.Tensor:
    """[H, W] ids 0..O -> [O, H, W] float."""
    ids = torch.arange(1, num_objects + 1, device=labels.device)[:, None, None]
    return (labels[None] == ids).float()


class TrainingWrapper(nn.Module):
    def __init__(self, model: ISVOS, *, top_k: int = 20, instance_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        self.instance_weight = instance_weight

    def forward(
        self, frames: torch.Tensor, labels: torch.Tensor, num_objects: list[int], top_p: float
    ) -> ClipLosses:
        """frames [B, T, 3, H, W] in [0, 1]; labels [B, T, H, W] int64 ids 0..O_b."""
        model = self.model
        b, t, _, h, w = frames.shape
        features, class_logits, mask_logits = model.encode_frame_full(frames.flatten(0, 1))
        key = features[0]
        ce_terms: list[torch.Tensor] = []
        dice_terms: list[torch.Tensor] = []
        padded = key.shape[-2] * 16, key.shape[-1] * 16
        for i in range(b):
            objects = num_objects[i]
            if objects == 0:
                continue
            rows = slice(i * t, (i + 1) * t)
            clip_features = tuple(f[rows] for f in features)
            keys = clip_features[0]  # [T, C_k, h, w]
            first = _one_hot(labels[i, 0], objects)
            values = [
                model.encode_value(
                    frames[i, 0:1], first, (labels[i, 0] > 0).float(), clip_features[1][0:1]
                )
            ]
            for j in range(1, t):
                memory_key = keys[:j].transpose(0, 1).flatten(1)  # [C_k, j*n]
                memory_value = torch.stack(values, 2).flatten(2)  # [O, C_v, j*n]
                frame_features = tuple(f[j : j + 1] for f in clip_features)
                logits = model.read_decode(
                    frame_features, memory_key, memory_value, self.top_k, 1 << 30
                )
                logits = F.interpolate(
                    logits[None], size=padded, mode="bilinear", align_corners=False
                )[0, :, :h, :w]
                merged = aggregate_logits(torch.sigmoid(logits))  # [O+1, H, W]
                target = labels[i, j]
                ce_terms.append(bootstrapped_ce(merged, target, top_p))
                dice_terms.append(dice_loss(merged.softmax(0)[1:], _one_hot(target, objects)))
                if j < t - 1:
                    hard = merged.argmax(0).detach()
                    values.append(
                        model.encode_value(
                            frames[i, j : j + 1],
                            _one_hot(hard, objects),
                            (hard > 0).float(),
                            frame_features[1],
                        )
                    )
        vos_ce = torch.stack(ce_terms).mean() if ce_terms else frames.new_zeros(())
        vos_dice = torch.stack(dice_terms).mean() if dice_terms else frames.new_zeros(())
        size4 = mask_logits[0].shape[-2:]
        instance_targets = []
        for frame_labels, count in zip(
            labels.flatten(0, 1), [n for n in num_objects for _ in range(t)], strict=True
        ):
            small = F.interpolate(
                F.pad(frame_labels, [0, padded[1] - w, 0, padded[0] - h])[None, None].float(),
                size=size4,
                mode="nearest",
            )[0, 0]
            present = [o for o in range(1, count + 1) if bool((small == o).any())]
            instance_targets.append(
                torch.stack([small == o for o in present])
                if present
                else torch.zeros(0, *size4, dtype=torch.bool, device=labels.device)
            )
        inst = instance_loss(class_logits, mask_logits, instance_targets)
        total = 0.5 * vos_ce + 0.5 * vos_dice + self.instance_weight * inst
        return ClipLosses(total, vos_ce.detach(), vos_dice.detach(), inst.detach())
