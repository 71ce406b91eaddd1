"""Checkpoint loading, in one place: state dicts read with ``weights_only=True`` and checked
against the network they are for, and a trial's student rebuilt from its folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import layout
from ._errors import CheckpointError
from .compress import build_network


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``; accepts a bare state dict or one under
    ``state_dict`` / ``model`` (common training-script formats)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what}: file not found: {path}") from None
    except Exception as err:  # truncated zip, pickle of code objects, not a torch file, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{what}: cannot read {path} as a state dict ({first[:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(_is_state(v) for v in obj.values()):
        raise CheckpointError(f"{what}: {path} is not a state dict (a mapping of names to tensors)")
    return obj


def _is_state(value) -> bool:
    """A state dict entry: a tensor, or what int8 modules store (packed (weight, bias)
    tuples, dtypes)."""
    if isinstance(value, (tuple, list)):
        return all(v is None or isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, (torch.Tensor, torch.dtype))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str, arch: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming what does not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and isinstance(v, torch.Tensor) and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of other shape (e.g. {shapes[0]})")
        raise CheckpointError(f"{what}: does not match the architecture {arch}: " + "; ".join(parts))
    model.load_state_dict(state)


def arch_name(spec: dict[str, Any]) -> str:
    dims = ", ".join(f"{k}={v}" for k, v in spec["dims"].items())
    return f"{spec['family']}({dims})" if dims else spec["family"]


def load_trial_student(trial_path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(network with its trained weights, spec) of a finished trial's folder
    ``trials/<number>/``: the spec as recorded (pruned and int8 structure included)."""
    spec_file = trial_path / layout.SPEC
    try:
        spec = json.loads(spec_file.read_text())["spec"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{spec_file}: cannot read the student spec ({err})") from None
    model = build_network(spec)
    weights = trial_path / layout.STUDENT
    load_weights(model, load_state_dict(weights, str(weights)), str(trial_path), spec["family"])
    return model, spec


def trial_params(trial_path: Path) -> dict[str, Any]:
    """The sampled parameters a finished trial ran with (from its ``spec.json``)."""
    try:
        return json.loads((trial_path / layout.SPEC).read_text())["params"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{trial_path / layout.SPEC}: cannot read the trial's parameters ({err})") from None


def load_train_state(path: str | Path) -> dict[str, Any]:
    """A running trial's epoch checkpoint (``inflight/<number>.pt``, what
    :meth:`autodistill.distill.train.TrainState.as_dict` holds), read with ``weights_only=True``;
    :class:`CheckpointError` when it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # never half-written by a kill (atomic), but empty after a power cut (not fsynced) or foreign
        raise CheckpointError(f"{path}: cannot read the epoch checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path}: not an epoch checkpoint")
    return state
