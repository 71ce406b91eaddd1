"""Pieces shared by the families: the input-size-adaptive stem and width rounding."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def make_divisible(value: float, divisor: int = 4, minimum: int = 4) -> int:
    """Round a channel count to a multiple of ``divisor`` (not below ``minimum``), as in
    MobileNet; never round down by more than 10%."""
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def stem_stride(image_size: int) -> int:
    """Total downsampling done by the stem so that the first stage sees about 32-56 px.

    8x8 digits and 32x32 CIFAR keep full resolution; 64 px halves; 224 px ImageNet-sized
    inputs go down by 4 (a strided conv plus a max-pool, as in ResNet).
    """
    if image_size >= 128:
        return 4
    if image_size >= 64:
        return 2
    return 1


class Stem(nn.Sequential):
    """conv-BN-act whose stride depends on the input size (see :func:`stem_stride`)."""

    def __init__(self, in_channels: int, out_channels: int, image_size: int, act: type[nn.Module] = nn.ReLU):
        stride = stem_stride(image_size)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, stride=min(stride, 2), padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            act(inplace=True),
        ]
        if stride == 4:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        super().__init__(*layers)


def stage_strides(image_size: int, num_stages: int) -> list[int]:
    """Stride of each stage: the first keeps resolution, later ones halve it while the
    feature map is at least 4 px wide (an 8x8 input goes 8 -> 4 -> 2, never to 0)."""
    size = image_size // stem_stride(image_size)
    strides = []
    for i in range(num_stages):
        stride = 2 if i > 0 and size >= 4 else 1
        size //= stride
        strides.append(stride)
    return strides


class Classifier(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)


class StagedNet(nn.Module):
    """stem -> stages -> classifier. ``forward_features`` returns every stage's output, which
    feature and attention distillation losses match against the teacher's."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)  # (B, C_i, H_i, W_i)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1])

    def forward_distill(self, x: torch.Tensor, attention: bool = False):
        """(logits, stage outputs, []): a conv net has no attention matrices."""
        feats = self.forward_features(x)
        return self.head(feats[-1]), feats, []

    def cam_weight(self) -> torch.Tensor:
        """(K, C): logits = cam_weight @ global average of the last stage + bias."""
        return self.head[-1].weight


def build_staged(
    dims,
    in_channels: int,
    num_classes: int,
    image_size: int,
    block: Callable[[int, int, int], nn.Module],
    act: type[nn.Module] = nn.ReLU,
) -> StagedNet:
    """stem -> per stage ``depth`` blocks ``block(cin, cout, stride)`` (the first strided)
    -> classifier, with widths scaled by ``dims.width_mult``. Shared by the conv families."""
    widths = [make_divisible(w * dims.width_mult) for w in dims.widths]
    strides = stage_strides(image_size, len(widths))
    stem = Stem(in_channels, widths[0], image_size, act=act)
    stages, cin = [], widths[0]
    for width, depth, stride in zip(widths, dims.depths, strides):
        stages.append(nn.Sequential(*(block(cin if i == 0 else width, width, stride if i == 0 else 1) for i in range(depth))))
        cin = width
    return StagedNet(stem, stages, Classifier(cin, num_classes, dims.dropout))
