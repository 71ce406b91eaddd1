"""The student families' dimensions (``student.<family>:`` of the study file), apart from the
networks (:mod:`autodistill.students`), so that a study file is read and checked without
importing torch. Each family module registers its builder with its model here
(``tests/test_students.py`` checks that the registry and :data:`FAMILY_DIMS` agree)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._tunable import tunable

Width = tunable("int", ge=1)
Depth = tunable("int", ge=1, le=16)


class StageDims(BaseModel):
    """Per-stage widths and depths, scaled by a width multiplier (each may be searched)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    widths: list[Width] = Field(default=[16, 32, 64], min_length=1, max_length=8)
    """channels of each stage before the width multiplier"""
    depths: list[Depth] = Field(default=[1, 1, 1], min_length=1, max_length=8)
    """layers (cnn) or blocks (resnet, mobilenet) in each stage"""
    width_mult: tunable("float", gt=0, le=8) = 1.0
    """multiplies every stage width; rounded to a multiple of 4 channels"""
    dropout: tunable("float", ge=0, le=0.9) = 0.0
    """dropout before the classifier"""

    @model_validator(mode="after")
    def _same_number_of_stages(self) -> StageDims:
        if len(self.widths) != len(self.depths):
            raise ValueError(f"widths has {len(self.widths)} stages but depths has {len(self.depths)}; they must match")
        return self


class CNNDims(StageDims):
    pass


class ResNetDims(StageDims):
    pass


MOBILENET_ACTIVATIONS = ["hardswish", "relu", "relu6"]
"""the activations a MobileNet block may use (:mod:`autodistill.students.mobilenet` builds them)"""


class MobileNetDims(StageDims):
    expand_ratio: tunable("int", ge=1, le=8) = 4
    """hidden width of a block = expand_ratio x its input width"""
    se: tunable("bool") = False
    """squeeze-and-excitation in every block (MobileNetV3)"""
    activation: tunable("str", choices=MOBILENET_ACTIVATIONS) = "relu6"
    """relu, relu6 (MobileNetV2) or hardswish (MobileNetV3)"""


class ViTDims(BaseModel):
    """Patch size, embedding width, depth, heads and MLP ratio (each may be searched)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    patch_size: tunable("int", ge=1, le=64) = 2
    """side of the square patches; an image of S px gives (S // patch_size)^2 tokens"""
    embed_dim: tunable("int", ge=8, le=2048) = 64
    """token width (rounded up to a multiple of heads)"""
    depth: tunable("int", ge=1, le=32) = 4
    """encoder blocks"""
    heads: tunable("int", ge=1, le=32) = 4
    """attention heads per block"""
    mlp_ratio: tunable("float", gt=0, le=8) = 2.0
    """hidden width of a block's MLP = mlp_ratio x embed_dim"""
    dropout: tunable("float", ge=0, le=0.9) = 0.0
    """dropout before the classifier"""


FAMILY_DIMS: dict[str, type[BaseModel]] = {"cnn": CNNDims, "mobilenet": MobileNetDims, "resnet": ResNetDims, "vit": ViTDims}
"""each student family's dimensions, by family name"""


def family_names() -> list[str]:
    return sorted(FAMILY_DIMS)


def family_dims(name: str) -> type[BaseModel]:
    """The dimensions of the family called ``name``."""
    try:
        return FAMILY_DIMS[name]
    except KeyError:
        raise ValueError(f"unknown student family {name!r}; valid: {', '.join(family_names())}") from None


def check_torchvision_name(name: str) -> None:
    """A teacher's ``torchvision:<name>``: one of torchvision's classification models (imports
    torchvision, and with it torch: only a study with such a teacher)."""
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        close = [v for v in valid if name.split("_")[0] in v][:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown torchvision classification model {name!r}{hint}")
