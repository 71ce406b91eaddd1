"""What every section shares: unknown keys are errors, field docstrings are the reference, and
the helpers that ask what a fixed-or-searched field may take."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .._tunable import Choice, is_distribution


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def may_be_on(value: Any) -> bool:
    """Whether a fixed, chosen or ranged field may take a value other than 0 / False / None."""
    if isinstance(value, Choice):
        return any(v not in (0, False, None) for v in value.choice)
    if is_distribution(value):
        return value.high > 0
    return value not in (0, False, None)


def choices(value: Any) -> tuple:
    """The values a fixed-or-choice field can take."""
    return value.choice if is_distribution(value) else (value,)


def has_distribution(model: Any) -> bool:
    """Whether anything inside ``model`` (a section, list or dict) is searched."""
    if is_distribution(model):
        return True
    if isinstance(model, BaseModel):
        return any(has_distribution(getattr(model, f)) for f in type(model).model_fields)
    if isinstance(model, (list, tuple)):
        return any(has_distribution(v) for v in model)
    if isinstance(model, dict):
        return any(has_distribution(v) for v in model.values())
    return False
