"""Small building blocks shared by the ISVOS modules.

Naming: ``x`` is per-image ([B, C, H, W]); ``g`` is per-object ([O, C, H, W]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """STCN residual block ``x + conv3x3(relu(conv3x3(relu(x))))``; a 1x1 conv shortcut when
    the width changes (STCN uses 3x3; 1x1 halves the cost of the stride-4 blocks)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        self.shortcut = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        shortcut = self.shortcut
        if shortcut is not None:
            x = shortcut(x)
        return x + out


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP over average- and max-pooled descriptors."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(dim // reduction, 4)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3)))
        mx = self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7x7 conv over channel-wise max and mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018), used by the value encoder (§1.7)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.channel = ChannelGate(dim)
        self.spatial = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (Mask2Former mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims, outs, strict=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def sine_position_embedding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """DETR sine positional embedding for a [B, C, H, W] map, returned as [B, dim, H, W].

    Computed from the shape at run time, so scripted graphs accept any height and width.
    """
    b, _, h, w = x.shape
    half = dim // 2
    eps = 1e-6
    y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
    y_embed = y_embed / (float(h) + eps) * 2 * math.pi
    x_embed = x_embed / (float(w) + eps) * 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32, device=x.device)
    dim_t = 10000.0 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    pos_x = x_embed[:, None] / dim_t  # [W, half]
    pos_y = y_embed[:, None] / dim_t  # [H, half]
    pos_x = torch.stack([pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()], dim=2).flatten(1)
    pos_y = torch.stack([pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()], dim=2).flatten(1)
    pos = torch.cat(
        [pos_y[:, None, :].expand(h, w, half), pos_x[None, :, :].expand(h, w, half)], dim=2
    )
    pos = pos.permute(2, 0, 1)[None].expand(b, dim, h, w)
    return pos.to(x.dtype)


def conv_gn(in_dim: int, out_dim: int, kernel: int, groups: int = 8) -> nn.Sequential:
    """Conv + GroupNorm (+ReLU for 3x3), the pixel decoder's projection unit."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(min(groups, out_dim), out_dim),
    ]
    if kernel > 1:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
