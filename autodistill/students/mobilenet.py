"""MobileNetV2/V3-style: stages of inverted residual blocks (Sandler et al. 2018), with
optional squeeze-and-excitation and hard-swish as in MobileNetV3 (Howard et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .._tunable import tunable
from ._common import build_staged, make_divisible
from ._dims import StageDims
from ._registry import register_family

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


class MobileNetDims(StageDims):
    expand_ratio: tunable("int", ge=1, le=8) = 4
    """hidden width of a block = expand_ratio x its input width"""
    se: tunable("bool") = False
    """squeeze-and-excitation in every block (MobileNetV3)"""
    activation: tunable("str", choices=sorted(_ACTIVATIONS)) = "relu6"
    """relu, relu6 (MobileNetV2) or hardswish (MobileNetV3)"""


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


@register_family("mobilenet", dims=MobileNetDims)
def build_mobilenet(dims: MobileNetDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """MobileNetV2/V3-style: per stage `depth` inverted residual blocks (expansion, SE)."""
    act = _ACTIVATIONS[dims.activation]

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return InvertedResidual(cin, cout, stride, dims.expand_ratio, dims.se, act)

    return build_staged(dims, in_channels, num_classes, image_size, block, act)
