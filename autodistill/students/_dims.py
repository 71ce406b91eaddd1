"""Architecture dimensions shared by the convolutional families."""

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
