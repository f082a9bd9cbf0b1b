"""Multi-scale deformable attention in pure PyTorch (Deformable DETR; spec §1.3, §1.5 Eq. 2).

The sampling uses ``grid_sample``, so the module scripts, exports and runs on CPU without the
custom CUDA op. Shapes:

- query: [B, Nq, D]
- reference_points: [B, Nq, L, 2], normalised (x, y) in [0, 1]
- value: [B, sum(H_l * W_l), D], levels concatenated in the order of ``spatial_shapes``
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling of every level and weighted sum over levels and points.

    value: [B, Nv, heads, dh]; sampling_locations: [B, Nq, heads, L, P, 2] in [0, 1];
    attention_weights: [B, Nq, heads, L, P]. Returns [B, Nq, heads * dh].
    """
    b, _, heads, dh = value.shape
    _, nq, _, levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    sampled: list[torch.Tensor] = []
    start = 0
    for level, (h, w) in enumerate(spatial_shapes):
        value_l = value[:, start : start + h * w]  # [B, HW, heads, dh]
        start += h * w
        value_l = value_l.permute(0, 2, 3, 1).reshape(b * heads, dh, h, w)
        grid_l = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(b * heads, nq, points, 2)
        sampled.append(
            F.grid_sample(
                value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # [B*heads, dh, Nq, P]
    stacked = torch.stack(sampled, dim=3).flatten(3)  # [B*heads, dh, Nq, L*P]
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(b * heads, 1, nq, levels * points)
    out = (stacked * weights).sum(-1)  # [B*heads, dh, Nq]
    return out.view(b, heads * dh, nq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable attention over ``num_levels`` feature levels with learned sampling offsets."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation: offsets start on rings around the reference point."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        b, nq, _ = query.shape
        nv = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(b, nv, heads, self.dim // heads)
        offsets = self.sampling_offsets(query).view(b, nq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(b, nq, heads, levels * points)
        weights = weights.softmax(-1).view(b, nq, heads, levels, points)
        normaliser = torch.tensor(
            [[float(w), float(h)] for h, w in spatial_shapes],
            dtype=query.dtype,
            device=query.device,
        )  # [L, 2] as (x, y)
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normaliser[None, None, None, :, None, :]
        )
        out = ms_deform_attn_core(v, spatial_shapes, locations, weights)
        return self.output_proj(out)


def level_reference_points(
    spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Normalised pixel centres of every level, [sum(HW), 2] as (x, y)."""
    refs: list[torch.Tensor] = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([ref_x.flatten(), ref_y.flatten()], -1))
    return torch.cat(refs, 0)
