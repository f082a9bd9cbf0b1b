"""The ISVOS network (spec §1.2): wiring only, one method per stage.

Stages, each a plain-tensor function that TorchScript exports as its own graph:

- ``encode_frame``: image -> query key Q and the features the decoder needs (backbone,
  instance branch, Enhanced Key Encoder). Object-agnostic.
- ``read_decode``: Q + memory (keys, per-object values) -> per-object logits at stride 4.
- ``encode_value``: image + per-object masks + F_res4 -> memory values.
- ``propose``: image -> the instance branch's last-layer proposals (object probability and
  mask logits per object query), for click-to-select (``isvos.proposals``).

Images enter as float RGB in [0, 1], [B, 3, H, W], at any H and W: the graphs normalise and
pad to a multiple of 32 themselves; outputs stay at the padded size (callers crop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isvos.config import ISVOSConfig

from .backbones import build_backbone
from .key_encoder import EnhancedKeyEncoder
from .memory_read import read_memory
from .mpf_decoder import MPFDecoder
from .pixel_decoder import PixelDecoder
from .transformer_decoder import TransformerDecoder
from .value_encoder import ValueEncoder

FrameFeatures = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]
"""(key [B, C_k, h, w], f16, f8, f4, p32, p16, p8) at the padded size."""


class InputNormaliser(nn.Module):
    """Normalise [0, 1] RGB and zero-pad (after normalisation) to a multiple of ``divisor``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], divisor: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.divisor = divisor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        return pad_to_multiple(x, self.divisor)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad the bottom and right of [.., H, W] to multiples of ``divisor``."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (divisor - h % divisor) % divisor
    pad_w = (divisor - w % divisor) % divisor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [0, pad_w, 0, pad_h])


class ISVOS(nn.Module):
    """Instance-branch + VOS-branch network. Constructed by ``isvos.model.build``."""

    def __init__(self, config: ISVOSConfig) -> None:
        super().__init__()
        self.config = config
        self.normaliser = InputNormaliser(
            config.pixel_mean, config.pixel_std, config.size_divisibility
        )
        self.backbone = build_backbone(config.backbone, config.tiny_backbone_channels)
        c4, c8, c16, c32 = self.backbone.channels
        self.pixel_decoder = PixelDecoder(
            (c4, c8, c16, c32),
            dim=config.hidden_dim,
            mask_dim=config.mask_dim,
            num_layers=config.pixel_decoder_layers,
            ffn_dim=config.pixel_decoder_ffn_dim,
            heads=config.deform_heads,
            points=config.deform_points,
        )
        self.transformer_decoder = TransformerDecoder(
            dim=config.hidden_dim,
            num_queries=config.num_queries,
            num_layers=config.decoder_layers,
            heads=config.decoder_heads,
            ffn_dim=config.decoder_ffn_dim,
            mask_dim=config.mask_dim,
            num_classes=config.num_classes,
        )
        self.key_encoder = EnhancedKeyEncoder(
            in_dim=c16,
            hidden_dim=config.hidden_dim,
            num_queries=config.num_queries,
            key_dim=config.key_dim,
            heads=config.deform_heads,
            points=config.deform_points,
            scale_injection=config.scale_injection,
        )
        self.value_encoder = ValueEncoder(
            frame_dim=c16,
            value_dim=config.value_dim,
            widths=config.value_encoder_widths,
            blocks_per_stage=config.value_encoder_blocks,
        )
        self.decoder = MPFDecoder(
            value_dim=config.value_dim,
            skip_dims=(c16, c8, c4),
            pyramid_dim=config.hidden_dim,
            widths=config.decoder_widths,
        )

    def encode_frame_full(
        self, image: torch.Tensor
    ) -> tuple[FrameFeatures, list[torch.Tensor], list[torch.Tensor]]:
        """All of encode_frame plus the instance head's per-layer predictions (training)."""
        x = self.normaliser(image)
        f4, f8, f16, f32 = self.backbone(x)
        p32, p16, p8, pixel = self.pixel_decoder(f4, f8, f16, f32)
        queries, class_logits, mask_logits = self.transformer_decoder([p32, p16, p8], pixel)
        key = self.key_encoder(f16, queries)
        return (key, f16, f8, f4, p32, p16, p8), class_logits, mask_logits

    @torch.jit.export
    def propose(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [1, 3, H, W] -> (object probability [N], mask logits [N, H'/4, W'/4]) of
        the N object queries after the last decoder layer (the last class is "no object")."""
        _, class_logits, mask_logits = self.encode_frame_full(image)
        objectness = 1.0 - class_logits[-1][0].softmax(-1)[:, -1]
        return objectness, mask_logits[-1][0]

    @torch.jit.export
    def encode_frame(self, image: torch.Tensor) -> FrameFeatures:
        return self.encode_frame_full(image)[0]

    def decode(self, readout: torch.Tensor, features: FrameFeatures) -> torch.Tensor:
        """F_mem [O, C_v, h, w] + one frame's features -> logits [O, H/4, W/4]."""
        _, f16, f8, f4, p32, p16, p8 = features
        return self.decoder(readout, f16, f8, f4, p32, p16, p8)[:, 0]

    @torch.jit.export
    def read_decode(
        self,
        features: FrameFeatures,
        memory_key: torch.Tensor,
        memory_value: torch.Tensor,
        top_k: int,
        chunk_size: int,
    ) -> torch.Tensor:
        """memory_key [C_k, M]; memory_value [O, C_v, M] -> logits [O, H/4, W/4]."""
        key = features[0]
        readout = read_memory(key[0].flatten(1), memory_key, memory_value, top_k, chunk_size)
        h, w = key.shape[-2], key.shape[-1]
        readout = readout.view(readout.shape[0], readout.shape[1], h, w).to(key.dtype)
        return self.decode(readout, features)

    @torch.jit.export
    def encode_value(
        self, image: torch.Tensor, masks: torch.Tensor, foreground: torch.Tensor, f16: torch.Tensor
    ) -> torch.Tensor:
        """image [1, 3, H, W] in [0, 1]; masks [O, H, W] (hard, one-hot); foreground [H, W]
        (every labelled pixel, removed objects included) -> values [O, C_v, h, w]."""
        x = self.normaliser(image)
        divisor = self.normaliser.divisor
        masks = pad_to_multiple(masks.to(x.dtype), divisor)[:, None]
        foreground = pad_to_multiple(foreground.to(x.dtype), divisor)[None, None]
        others = (foreground - masks).clamp(0.0, 1.0)
        return self.value_encoder(x, masks, others, f16)
