"""Plain CNN: stages of conv3x3-BN-ReLU layers."""

from __future__ import annotations

import torch.nn as nn

from ..config._students import CNNDims
from ._common import build_staged
from ._registry import register_family


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_family("cnn")
def build_cnn(dims: CNNDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Plain CNN: per stage `depth` conv3x3-BN-ReLU layers, the first strided."""
    return build_staged(dims, in_channels, num_classes, image_size, _conv_bn_relu)
