"""Instance-branch pixel decoder (spec §1.3, §1.4; Mask2Former MSDeformAttnPixelDecoder).

Backbone maps at strides 8/16/32 go through a multi-scale deformable-attention encoder and
come out as the pyramid {P_0, P_1, P_2} at strides 32, 16, 8; an FPN step with the stride-4
map gives the per-pixel embedding F_pixel (stride 4), which drives masked attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_attn import MSDeformAttn, level_reference_points
from .modules import conv_gn, sine_position_embedding


class DeformEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + feed-forward over all levels' tokens."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, points: int, levels: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class PixelDecoder(nn.Module):
    """Produces P_0 (1/32), P_1 (1/16), P_2 (1/8) of width ``dim`` and F_pixel (1/4)."""

    def __init__(
        self,
        in_channels: tuple[int, int, int, int],
        *,
        dim: int,
        mask_dim: int,
        num_layers: int,
        ffn_dim: int,
        heads: int,
        points: int,
    ) -> None:
        super().__init__()
        self.num_levels = 3
        c4, c8, c16, c32 = in_channels
        self.dim = dim
        # Coarse to fine: stride 32, 16, 8.
        self.input_proj = nn.ModuleList([conv_gn(c, dim, 1) for c in (c32, c16, c8)])
        self.level_embed = nn.Parameter(torch.randn(self.num_levels, dim) * 0.02)
        self.layers = nn.ModuleList(
            [
                DeformEncoderLayer(dim, ffn_dim, heads, points, self.num_levels)
                for _ in range(num_layers)
            ]
        )
        # The stride-4 FPN step runs at the (smaller or equal) mask width: it is the
        # largest map of the branch.
        self.top_down = conv_gn(dim, mask_dim, 1)
        self.lateral = conv_gn(c4, mask_dim, 1)
        self.output_conv = conv_gn(mask_dim, mask_dim, 3)
        self.mask_features = nn.Conv2d(mask_dim, mask_dim, 1)

    def forward(
        self, f4: torch.Tensor, f8: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (p32, p16, p8, pixel_embedding)."""
        feats = [f32, f16, f8]
        srcs: list[torch.Tensor] = []
        poss: list[torch.Tensor] = []
        shapes: list[tuple[int, int]] = []
        for i, proj in enumerate(self.input_proj):
            x = proj(feats[i])
            b, c, h, w = x.shape
            shapes.append((h, w))
            pos = sine_position_embedding(x, self.dim).flatten(2).transpose(1, 2)
            srcs.append(x.flatten(2).transpose(1, 2))
            poss.append(pos + self.level_embed[i][None, None, :])
        src = torch.cat(srcs, 1)
        pos = torch.cat(poss, 1)
        refs = level_reference_points(shapes, src.device, src.dtype)
        refs = refs[None, :, None, :].expand(src.shape[0], refs.shape[0], self.num_levels, 2)
        for layer in self.layers:
            src = layer(src, pos, refs, shapes)
        outs: list[torch.Tensor] = []
        start = 0
        for h, w in shapes:
            outs.append(src[:, start : start + h * w].transpose(1, 2).reshape(-1, self.dim, h, w))
            start += h * w
        p32, p16, p8 = outs[0], outs[1], outs[2]
        x = self.lateral(f4) + F.interpolate(
            self.top_down(p8), size=f4.shape[-2:], mode="bilinear", align_corners=False
        )
        pixel = self.mask_features(self.output_conv(x))
        return p32, p16, p8, pixel
