"""Torchvision classification models as teachers (``teacher.arch: torchvision:resnet18``).

Weights are never downloaded: a torchvision teacher is trained by autodistill or loaded from
``teacher.checkpoint``. The first convolution is rebuilt when the input is not 3-channel.
"""

from __future__ import annotations

import torch.nn as nn


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups if child.groups == 1 else in_channels,
                    child.bias is not None,
                )
                setattr(parent, child_name, new)
                return


def build_torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model
