"""VOS branch: the memory value encoder (spec §1.7).

Per object: RGB + own mask + others mask (5 channels) through a ResNet-18-style encoder to
stride 16, concatenated with the frame's F_res4, then two residual blocks and CBAM give
V_cur [O, C_v, h, w].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BasicBlock
from .modules import CBAM, ResBlock


class ValueEncoder(nn.Module):
    def __init__(
        self,
        *,
        frame_dim: int,
        value_dim: int,
        widths: tuple[int, int, int, int],
        blocks_per_stage: int,
    ) -> None:
        super().__init__()
        stem, w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(5, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(stem, w1, 1, blocks_per_stage)
        self.layer2 = self._stage(w1, w2, 2, blocks_per_stage)
        self.layer3 = self._stage(w2, w3, 2, blocks_per_stage)
        self.fuse1 = ResBlock(frame_dim + w3, value_dim)
        self.fuse2 = ResBlock(value_dim, value_dim)
        self.attention = CBAM(value_dim)

    @staticmethod
    def _stage(in_dim: int, out_dim: int, stride: int, blocks: int) -> nn.Sequential:
        layers = [BasicBlock(in_dim, out_dim, stride)]
        layers += [BasicBlock(out_dim, out_dim, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(
        self, image: torch.Tensor, masks: torch.Tensor, others: torch.Tensor, f16: torch.Tensor
    ) -> torch.Tensor:
        """image [1, 3, H, W]; masks, others [O, 1, H, W]; f16 [1, C16, h, w] -> [O, C_v, h, w]."""
        g = torch.cat([image.expand(masks.shape[0], -1, -1, -1), masks, others], 1)
        g = self.maxpool(F.relu(self.bn1(self.conv1(g))))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = torch.cat([g, f16.expand(g.shape[0], -1, -1, -1)], 1)
        return self.attention(self.fuse2(self.fuse1(g)))
