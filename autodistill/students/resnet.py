"""ResNet-style: stages of basic residual blocks (He et al. 2016)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config._students import ResNetDims
from ._common import build_staged
from ._registry import register_family


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_family("resnet")
def build_resnet(dims: ResNetDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """ResNet-style: per stage `depth` basic blocks, the first strided."""
    return build_staged(dims, in_channels, num_classes, image_size, BasicBlock)
