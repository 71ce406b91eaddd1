"""MobileNetV2/V3-style: stages of inverted residual blocks (Sandler et al. 2018), with
optional squeeze-and-excitation and hard-swish as in MobileNetV3 (Howard et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config._students import MobileNetDims
from ._common import build_staged, make_divisible
from ._registry import register_family

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = make_divisible(channels / 4, 4, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.relu(self.fc1(self.pool(x)))
        return x * nn.functional.hardsigmoid(self.fc2(scale))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool, act: type[nn.Module]):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(inplace=True),
        ]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


@register_family("mobilenet")
def build_mobilenet(dims: MobileNetDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """MobileNetV2/V3-style: per stage `depth` inverted residual blocks (expansion, SE)."""
    act = _ACTIVATIONS[dims.activation]

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return InvertedResidual(cin, cout, stride, dims.expand_ratio, dims.se, act)

    return build_staged(dims, in_channels, num_classes, image_size, block, act)
