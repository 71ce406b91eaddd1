"""``train:``, ``teacher:`` (and ``teachers:``) and ``student:``: the networks and how they train."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, create_model, field_validator

from .._tunable import fixed_only, tunable
from ._base import Section, has_distribution
from ._options import OPTIMIZERS
from ._students import check_torchvision_name, family_dims, family_names

Optimizer = tunable("str", choices=OPTIMIZERS)


class TrainConfig(Section):
    epochs: tunable("int", ge=1, le=10000) = 15
    """epochs of one trial's training"""
    lr: tunable("float", gt=0, le=10) = 3e-3
    """peak learning rate; decays with a cosine to 0 over the trial"""
    batch_size: tunable("int", ge=1, le=65536) = 64
    """images per optimisation step"""
    optimizer: Optimizer = "adamw"
    """adamw, or sgd (momentum, nesterov)"""
    weight_decay: tunable("float", ge=0, le=1) = 5e-4
    """decoupled (AdamW) or L2 (SGD) weight decay; not on biases and norms"""
    momentum: tunable("float", ge=0, lt=1) = 0.9
    """sgd only"""
    warmup_epochs: tunable("float", ge=0) = 0.0
    """linear learning-rate warm-up, in epochs (fractions allowed)"""


class TeacherTrainConfig(Section):
    """How a teacher is trained when no checkpoint is given (fixed values only)."""

    epochs: fixed_only("int", ge=1) = 30
    """epochs of the teacher's training (once per study config; cached)"""
    lr: fixed_only("float", gt=0) = 3e-3
    """peak learning rate, cosine decay"""
    batch_size: fixed_only("int", ge=1) = 64
    optimizer: fixed_only("str", choices=OPTIMIZERS) = "adamw"
    """adamw or sgd"""
    weight_decay: fixed_only("float", ge=0) = 5e-4
    momentum: fixed_only("float", ge=0, lt=1) = 0.9
    """sgd only"""
    warmup_epochs: fixed_only("float", ge=0) = 0.0
    """linear learning-rate warm-up, in epochs"""
    seed: int = 0
    """seed of the teacher's initialisation and batch order"""


class TeacherConfig(Section):
    arch: str | dict[str, Any] = Field(default_factory=lambda: {"family": "resnet", "widths": [32, 64, 128], "depths": [2, 2, 2]})
    """a student family with fixed dims ({family: resnet, widths: [...], ...}) or 'torchvision:<model name>'"""
    checkpoint: str | None = None
    """a state dict (.pt) for ``arch``; without one the teacher is trained once and cached"""
    train: TeacherTrainConfig = TeacherTrainConfig()
    weight: float = Field(1.0, gt=0)
    """weight of this teacher's soft targets in a multi-teacher study (``teachers:``); weights are normalised to sum 1"""

    @field_validator("arch")
    @classmethod
    def _check_arch(cls, arch: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(arch, str):
            if not arch.startswith("torchvision:"):
                raise ValueError(f"expected {{family: ..., <dims>}} or 'torchvision:<model>', got {arch!r}")
            check_torchvision_name(arch.split(":", 1)[1])
            return arch
        if "family" not in arch:
            raise ValueError(f"needs a 'family' key (one of {', '.join(family_names())})")
        dims = {k: v for k, v in arch.items() if k != "family"}
        validated = family_dims(arch["family"]).model_validate(dims)
        if has_distribution(validated):
            raise ValueError("a teacher architecture is fixed: it cannot hold distributions")
        return {"family": arch["family"], **validated.model_dump(mode="json")}

    @field_validator("checkpoint")
    @classmethod
    def _expand_checkpoint(cls, path: str | None) -> str | None:
        # existence is checked by check_paths, on the driver only: a trial re-validates its
        # config on a worker node, which may not see the driver's files
        return None if path is None else str(Path(os.path.expanduser(path)))


def _student_section() -> type[BaseModel]:
    """``student:`` has ``family`` plus one block of dimensions per registered family."""
    fields: dict[str, Any] = {
        "family": (tunable("str", choices=family_names), Field("cnn", description="student family: " + ", ".join(family_names()))),
    }
    for name in family_names():
        dims_model = family_dims(name)
        fields[name] = (dims_model, Field(default_factory=dims_model))
    return create_model("StudentConfig", __base__=Section, __module__=__name__, **fields)


StudentConfig = _student_section()
