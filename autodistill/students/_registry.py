"""Registry of student families.

Each family module registers the builder of a family whose dimensions the config knows
(:data:`autodistill.config._students.FAMILY_DIMS`, read without torch)::

    @register_family("cnn")
    def build_cnn(dims: CNNDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module: ...

The registry builds the students and teachers of specs, and feeds the registry-driven smoke
tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from pydantic import BaseModel

from ..config._students import family_dims
from .torchvision_models import build_torchvision


@dataclass(frozen=True)
class Family:
    name: str
    dims: type[BaseModel]
    build: Callable[..., nn.Module]


_FAMILIES: dict[str, Family] = {}


def register_family(name: str) -> Callable:
    """Register the builder of family ``name``; its dimensions are the config's."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"student family {name!r} is registered twice")
        _FAMILIES[name] = Family(name, family_dims(name), fn)
        return fn

    return decorator


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown student family {name!r}; valid: {', '.join(list_families())}") from None


def make_spec(family: str, dims: dict[str, Any], data: Any) -> dict[str, Any]:
    """A network spec for ``data`` (anything with in_channels, num_classes, image_size)."""
    return {
        "family": family,
        "dims": dims,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
    }


def build_student(spec: dict[str, Any], seed: int | None = None) -> nn.Module:
    """Build a network from a spec: ``{family, dims, in_channels, num_classes, image_size}``.

    ``dims`` hold fixed values only (a resolved trial, or a teacher architecture). A family
    ``torchvision:<name>`` builds a torchvision model (teachers only). A spec with a
    ``compress`` entry (a pruned and/or int8 student) is built by
    :func:`autodistill.compress.build_network`, which applies it.

    With ``seed`` the initial weights are a function of the seed alone (the global RNG is
    left as it was); without, they come from the global RNG.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_student(spec)
    if spec.get("compress"):
        raise ValueError("this spec has a compress entry (a pruned or int8 student): build it with autodistill.compress.build_network")
    if spec["family"].startswith("torchvision:"):
        return build_torchvision(spec["family"].split(":", 1)[1], spec["in_channels"], spec["num_classes"])
    family = get_family(spec["family"])
    dims = family.dims.model_validate(spec["dims"])
    return family.build(dims, spec["in_channels"], spec["num_classes"], spec["image_size"])
