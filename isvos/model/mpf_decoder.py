"""VOS branch: the decoder with Multi-Path Fusion blocks (spec §1.9, Eq. 4).

O_{-1} = F_mem; O_i = MPF(O_{i-1}, B_i, P_i) for i = 0..2 with
X_i = concat(Up(O_{i-1}) + Conv3x3(B_i), Up(Conv3x3(P_i))) and O_i = ResBlock(X_i).
Scales (§1.9 table): block 0 at 1/16 (B_0 = F_res4, P_0 from 1/32), block 1 at 1/8,
block 2 at 1/4, then a 3x3 conv to one logit per object at stride 4.
The convolutions of B_i and P_i do not depend on the object and run once per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import ResBlock


class MPFBlock(nn.Module):
    def __init__(self, in_dim: int, skip_dim: int, pyramid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_proj = nn.Conv2d(skip_dim, in_dim, 3, padding=1)
        self.pyramid_proj = nn.Conv2d(pyramid_dim, in_dim, 3, padding=1)
        self.fuse = ResBlock(2 * in_dim, out_dim)

    def forward(self, g: torch.Tensor, skip: torch.Tensor, pyramid: torch.Tensor) -> torch.Tensor:
        """g: O_{i-1} [O, C, h', w']; skip: B_i [1, Cb, h, w]; pyramid: P_i [1, Cp, h/2, w/2]."""
        size = (skip.shape[-2], skip.shape[-1])
        if g.shape[-2] != size[0] or g.shape[-1] != size[1]:
            g = F.interpolate(g, size=size, mode="bilinear", align_corners=False)
        p = F.interpolate(
            self.pyramid_proj(pyramid), size=size, mode="bilinear", align_corners=False
        )
        objects = g.shape[0]
        x = torch.cat([g + self.skip_proj(skip), p.expand(objects, -1, -1, -1)], 1)
        return self.fuse(x)


class MPFDecoder(nn.Module):
    def __init__(
        self,
        *,
        value_dim: int,
        skip_dims: tuple[int, int, int],
        pyramid_dim: int,
        widths: tuple[int, int, int],
    ) -> None:
        super().__init__()
        w16, w8, w4 = widths
        s16, s8, s4 = skip_dims
        self.block16 = MPFBlock(value_dim, s16, pyramid_dim, w16)
        self.block8 = MPFBlock(w16, s8, pyramid_dim, w8)
        self.block4 = MPFBlock(w8, s4, pyramid_dim, w4)
        self.head = nn.Conv2d(w4, 1, 3, padding=1)

    def forward(
        self,
        readout: torch.Tensor,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        p32: torch.Tensor,
        p16: torch.Tensor,
        p8: torch.Tensor,
    ) -> torch.Tensor:
        """readout: F_mem [O, C_v, h, w] -> logits [O, 1, H/4, W/4]."""
        g = self.block16(readout, f16, p32)
        g = self.block8(g, f8, p16)
        g = self.block4(g, f4, p8)
        return self.head(F.relu(g))
