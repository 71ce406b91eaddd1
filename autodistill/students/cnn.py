"""Plain CNN: stages of conv3x3-BN-ReLU layers."""

from __future__ import annotations

import torch.nn as nn

from ._common import Classifier, StagedNet, Stem, make_divisible, stage_strides
from ._dims import StageDims
from ._registry import register_family


class CNNDims(StageDims):
    pass


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_family("cnn", dims=CNNDims)
def build_cnn(dims: CNNDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Plain CNN: per stage `depth` conv3x3-BN-ReLU layers, the first strided."""
    widths = [make_divisible(w * dims.width_mult) for w in dims.widths]
    strides = stage_strides(image_size, len(widths))
    stem = Stem(in_channels, widths[0], image_size)
    stages, cin = [], widths[0]
    for width, depth, stride in zip(widths, dims.depths, strides):
        layers = [_conv_bn_relu(cin if i == 0 else width, width, stride if i == 0 else 1) for i in range(depth)]
        stages.append(nn.Sequential(*layers))
        cin = width
    return StagedNet(stem, stages, Classifier(cin, num_classes, dims.dropout))
