"""VOS branch: the Enhanced Key Encoder, "query enhancement" (spec §1.5, Eq. 2).

Q_g = Conv3x3(F_res4); q~_vos = DeformAttn(q~_ins, p, Q_g) with p = sigmoid(Linear(q~_ins));
S = sigmoid(q~_vos . Q_g) gives one instance-affinity map per query; Q = Conv3x3([Q_g, S]).
The key is object-agnostic: it is the query key of the frame and, when the frame is
memorised, its memory key.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .deform_attn import MSDeformAttn


class EnhancedKeyEncoder(nn.Module):
    def __init__(
        self,
        *,
        in_dim: int,
        hidden_dim: int,
        num_queries: int,
        key_dim: int,
        heads: int,
        points: int,
        scale_injection: bool,
    ) -> None:
        super().__init__()
        self.hidden_proj = nn.Conv2d(in_dim, hidden_dim, 3, padding=1)
        self.reference_points = nn.Linear(hidden_dim, 2)
        self.deform_attn = MSDeformAttn(hidden_dim, 1, heads, points)
        self.norm = nn.LayerNorm(hidden_dim)
        self.key_proj = nn.Conv2d(hidden_dim + num_queries, key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)
        self.injection_scale = 1.0 / math.sqrt(hidden_dim) if scale_injection else 1.0

    def forward(self, f16: torch.Tensor, instance_queries: torch.Tensor) -> torch.Tensor:
        """f16: F_res4 [B, C16, h, w]; instance_queries: q~_ins [B, N, C_h].

        Returns the key [B, C_k, h, w]."""
        q_g = self.hidden_proj(f16)
        b, c, h, w = q_g.shape
        flat = q_g.flatten(2)  # [B, C_h, hw]
        refs = self.reference_points(instance_queries).sigmoid()[:, :, None, :]  # [B, N, 1, 2]
        attended = self.deform_attn(instance_queries, refs, flat.transpose(1, 2), [(h, w)])
        q_vos = self.norm(instance_queries + attended)  # [B, N, C_h]
        maps = torch.sigmoid(torch.bmm(q_vos, flat) * self.injection_scale)  # [B, N, hw]
        q_cat = torch.cat([q_g, maps.view(b, -1, h, w)], 1)
        return self.key_proj(q_cat)
