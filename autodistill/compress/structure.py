"""The shape of a pruned network, as data: record it, and rebuild it from a fresh network.

Pruning changes the channel counts of convolutions, norms and linear layers (and nothing
else: the wiring stays). :func:`layer_shapes` lists the layers whose shapes differ from the
unpruned network; :func:`apply_shapes` puts layers of those shapes back into a freshly
built one, so that ``load_state_dict`` of the pruned weights fits exactly. This is what a
trial's ``spec.json`` stores under ``compress.layers``.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .._errors import CheckpointError


def _shape(module: nn.Module) -> dict[str, int] | None:
    if isinstance(module, nn.Conv2d):
        return {"in": module.in_channels, "out": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.BatchNorm2d):
        return {"features": module.num_features}
    if isinstance(module, nn.Linear):
        return {"in": module.in_features, "out": module.out_features}
    return None


def layer_shapes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, int]]:
    """{module name: shape} for each conv / batch norm / linear of ``model`` whose shape
    differs from the same module of ``reference`` (the unpruned network)."""
    ref = dict(reference.named_modules())
    out = {}
    for name, module in model.named_modules():
        shape = _shape(module)
        if shape is not None and name in ref and _shape(ref[name]) != shape:
            out[name] = shape
    return out


def _rebuilt(old: nn.Module, shape: dict[str, int]) -> nn.Module:
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(
            shape["in"],
            shape["out"],
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            shape["groups"],
            old.bias is not None,
            old.padding_mode,
        )
    if isinstance(old, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape["features"], old.eps, old.momentum, old.affine, old.track_running_stats)
    if isinstance(old, nn.Linear):
        return nn.Linear(shape["in"], shape["out"], old.bias is not None)
    raise TypeError(type(old).__name__)


def apply_shapes(model: nn.Module, shapes: dict[str, Any], source: str = "spec") -> nn.Module:
    """Replace the listed layers of a freshly built ``model`` by layers of the recorded
    shapes (in place; returns ``model``). Raises :class:`CheckpointError` when a name or a
    layer type does not fit this network."""
    for name, shape in shapes.items():
        try:
            old = model.get_submodule(name)
            new = _rebuilt(old, shape)
        except (AttributeError, TypeError, KeyError) as err:
            raise CheckpointError(f"{source}: compress.layers: {name!r} does not fit this network ({type(err).__name__}: {err})") from None
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
