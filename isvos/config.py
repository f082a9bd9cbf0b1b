"""Model configurations and per-session memory options (torch-free).

Three named configs (docs/model.md lists every fill-in and its source):

- ``paper-r50``: the paper's model with the fill-ins of ISVOS_SPEC §1.17.
- ``lite``: the same architecture, smaller, on EfficientNet-Lite0 (the shipped default).
- ``tiny``: a few thousand parameters, for tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from isvos.limits import MAX_OBJECT_ID


def _from_dict(cls, data: dict, what: str):
    """A frozen dataclass from a JSON-style dict; unknown keys are refused, lists -> tuples."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class ISVOSConfig:
    """Every architecture hyper-parameter of the network (spec §1.3-1.10)."""

    name: str
    # Backbone: "resnet50" (paper), "efficientnet_lite0" (lite) or "tiny_cnn" (tests).
    backbone: str
    # Channels of the tiny CNN's stages at strides 4/8/16/32 (ignored by other backbones).
    tiny_backbone_channels: tuple[int, int, int, int] = (8, 12, 16, 16)
    # C_d = C_h: width of the instance branch and of the key encoder's hidden map (§1.4, §1.5).
    hidden_dim: int = 256
    # N: learnable object queries (§1.4, "set to 100, empirically").
    num_queries: int = 100
    # MSDeformAttn pixel-decoder encoder layers (Mask2Former: 6).
    pixel_decoder_layers: int = 6
    # Heads / sampling points of every deformable attention (Deformable DETR: 8 / 4).
    deform_heads: int = 8
    deform_points: int = 4
    # Masked-attention transformer decoder layers, cycling 1/32, 1/16, 1/8 (Mask2Former: 9).
    decoder_layers: int = 9
    # Heads of the decoder's attention and its feed-forward width (Mask2Former: 8 / 2048).
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    # Pixel-decoder encoder feed-forward width (Mask2Former: 1024).
    pixel_decoder_ffn_dim: int = 1024
    # C_eps: per-pixel embedding width at stride 4 (Mask2Former MASK_DIM 256).
    mask_dim: int = 256
    # Instance classes of the training-only class head (1 = class-agnostic "object").
    num_classes: int = 1
    # C_k: key width (STCN keydim 64).
    key_dim: int = 64
    # C_v: value width (STCN/XMem 512).
    value_dim: int = 512
    # Scale the query-injection dot product by 1/sqrt(C_h) (§1.5 step 3; the paper writes none).
    scale_injection: bool = False
    # Value encoder (ResNet-18 style, to stride 16): stem width then layer1..3 widths.
    value_encoder_widths: tuple[int, int, int, int] = (64, 64, 128, 256)
    # Residual blocks per value-encoder stage (ResNet-18: 2).
    value_encoder_blocks: int = 2
    # MPF decoder widths at strides 16, 8, 4 (STCN decoder 512 -> 256 -> 256).
    decoder_widths: tuple[int, int, int] = (512, 256, 256)
    # Input normalisation (ImageNet statistics; EfficientNet-Lite uses 0.5/0.5).
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Inputs are padded to a multiple of this (P_0 lives at stride 32, §1.3).
    size_divisibility: int = 32
    # Load ImageNet backbone weights when they are available (lite only).
    pretrained_backbone: bool = True
    # Processing short side used when the caller does not choose one (pixels).
    default_short_side: int = 480

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ISVOSConfig:
        return _from_dict(cls, data, "config fields")

    def architecture_hash(self) -> str:
        """Hash of the fields that change tensor shapes or computation (not weights source)."""
        data = self.to_dict()
        data.pop("pretrained_backbone")
        data.pop("default_short_side")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PAPER_R50 = ISVOSConfig(name="paper-r50", backbone="resnet50", pretrained_backbone=False)

LITE = ISVOSConfig(
    name="lite",
    backbone="efficientnet_lite0",
    hidden_dim=96,
    num_queries=16,
    pixel_decoder_layers=1,
    deform_heads=4,
    deform_points=2,
    decoder_layers=3,
    decoder_heads=4,
    decoder_ffn_dim=256,
    pixel_decoder_ffn_dim=256,
    mask_dim=48,
    key_dim=64,
    value_dim=128,
    scale_injection=True,
    value_encoder_widths=(16, 24, 48, 96),
    value_encoder_blocks=1,
    decoder_widths=(96, 32, 16),
    pixel_mean=(0.5, 0.5, 0.5),
    pixel_std=(0.5, 0.5, 0.5),
    default_short_side=240,
)

TINY = ISVOSConfig(
    name="tiny",
    backbone="tiny_cnn",
    hidden_dim=16,
    num_queries=4,
    pixel_decoder_layers=1,
    deform_heads=2,
    deform_points=2,
    decoder_layers=3,
    decoder_heads=2,
    decoder_ffn_dim=32,
    pixel_decoder_ffn_dim=32,
    mask_dim=16,
    key_dim=16,
    value_dim=16,
    scale_injection=True,
    value_encoder_widths=(8, 8, 12, 16),
    value_encoder_blocks=1,
    decoder_widths=(16, 12, 8),
    pretrained_backbone=False,
    default_short_side=96,
)

# The lite network on the deeper (Lite1) and deeper and wider (Lite2) backbones, to measure
# against Lite0 (docs/model_card.md); no checkpoint ships for them.
LITE1 = dataclasses.replace(LITE, name="lite1", backbone="efficientnet_lite1")
LITE2 = dataclasses.replace(LITE, name="lite2", backbone="efficientnet_lite2")

CONFIGS: dict[str, ISVOSConfig] = {c.name: c for c in (PAPER_R50, LITE, LITE1, LITE2, TINY)}


def get_config(name: str) -> ISVOSConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None


@dataclass(frozen=True)
class MemoryOptions:
    """Per-session memory policy (spec §1.8, §4.3, DESIGN decision 5)."""

    # FIFO capacity in frames, pinned frames included (paper: 16; 64 for long videos).
    max_memory_frames: int = 16
    # Memorise a frame when at least this many frames passed since the last one (paper: 5).
    mem_every: int = 5
    # Top-k filter on the affinity (paper: 20).
    top_k: int = 20
    # Pinned slots in all, frame 0 included; a correction replaces the object's earlier pin.
    max_pins: int = 4
    # Most objects a session may hold (ids are 1..255, the indexed-PNG limit).
    max_objects: int = 16
    # Query positions per affinity chunk (bounds transient memory at large sizes, decision 6).
    affinity_chunk: int = 4096

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if type(getattr(self, item.name)) is not int:
                raise ValueError(f"{item.name} must be an integer")
        if self.max_memory_frames < 2:
            raise ValueError("max_memory_frames must be at least 2")
        if self.mem_every < 1:
            raise ValueError("mem_every must be at least 1")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if self.max_pins < 1:
            raise ValueError("max_pins must be at least 1")
        if not 1 <= self.max_objects <= MAX_OBJECT_ID:
            raise ValueError(f"max_objects must be in [1, {MAX_OBJECT_ID}]")
        if self.affinity_chunk < 1:
            raise ValueError("affinity_chunk must be positive")

    @property
    def pin_cap(self) -> int:
        """Pins in force: at least one slot always stays free for the FIFO."""
        return min(self.max_pins, self.max_memory_frames - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MemoryOptions:
        return _from_dict(cls, data, "memory options")
