"""Instance-branch transformer decoder with masked attention (spec §1.4 Eq. 1, §1.11).

N learnable object queries attend, layer by layer, to one level of {P_0, P_1, P_2} (cycling
1/32 -> 1/16 -> 1/8). Layer l's cross-attention is restricted to the pixels that layer l-1
predicts as foreground (binarised at 0.5), so the per-layer mask path (mask MLP + F_pixel) is
part of the inference graph; only the class head is training-only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import MLP, sine_position_embedding


class DecoderLayer(nn.Module):
    """Masked cross-attention, then self-attention, then feed-forward (post-norm)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> torch.Tensor:
        attended = self.cross_attn(
            query + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False
        )[0]
        query = self.norm_cross(query + attended)
        q = query + query_pos
        query = self.norm_self(query + self.self_attn(q, q, query, need_weights=False)[0])
        return self.norm_ffn(query + self.linear2(F.relu(self.linear1(query))))


class TransformerDecoder(nn.Module):
    """Outputs q~_ins and, per layer, class logits and mask logits (for deep supervision)."""

    def __init__(
        self,
        *,
        dim: int,
        num_queries: int,
        num_layers: int,
        heads: int,
        ffn_dim: int,
        mask_dim: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.num_levels = 3
        self.dim = dim
        self.heads = heads
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(self.num_levels, dim)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, ffn_dim) for _ in range(num_layers)])
        self.decoder_norm = nn.LayerNorm(dim)
        # Training-only class head; the +1 is the "no object" class.
        self.class_embed = nn.Linear(dim, num_classes + 1)
        # Mask embedding MLP with 2 hidden layers (§1.4).
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def predict(
        self, query: torch.Tensor, pixel: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits [B, N, K+1], mask logits [B, N, H4, W4], attention mask at ``size``."""
        normed = self.decoder_norm(query)
        class_logits = self.class_embed(normed)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(normed), pixel)
        small = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
        blocked = small.sigmoid().flatten(2) < 0.5  # [B, N, HW]; True = may not attend
        # A query that would see nothing attends everywhere instead (Mask2Former).
        blocked = blocked & ~blocked.all(-1, keepdim=True)
        blocked = blocked[:, None].expand(-1, self.heads, -1, -1).flatten(0, 1)
        return class_logits, mask_logits, blocked

    def forward(
        self, levels: list[torch.Tensor], pixel: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """levels: [P_0, P_1, P_2]; pixel: F_pixel [B, C_eps, H/4, W/4].

        Returns (q~_ins [B, N, D], class logits per prediction, mask logits per prediction);
        there are ``num_layers + 1`` predictions (one from the initial queries).
        """
        b = pixel.shape[0]
        memories: list[torch.Tensor] = []
        positions: list[torch.Tensor] = []
        sizes: list[tuple[int, int]] = []
        for i, level in enumerate(levels):
            sizes.append((level.shape[-2], level.shape[-1]))
            pos = sine_position_embedding(level, self.dim).flatten(2).transpose(1, 2)
            positions.append(pos)
            memories.append(
                level.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None, :]
            )
        query = self.query_feat.weight[None].expand(b, -1, -1)
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        class_list: list[torch.Tensor] = []
        mask_list: list[torch.Tensor] = []
        class_logits, mask_logits, blocked = self.predict(query, pixel, sizes[0])
        class_list.append(class_logits)
        mask_list.append(mask_logits)
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            query = layer(query, query_pos, memories[level], positions[level], blocked)
            next_size = sizes[(i + 1) % self.num_levels]
            class_logits, mask_logits, blocked = self.predict(query, pixel, next_size)
            class_list.append(class_logits)
            mask_list.append(mask_logits)
        return self.decoder_norm(query), class_list, mask_list
