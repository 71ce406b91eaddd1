"""Validation errors as one line: the field path, what is wrong, and the value given."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from .._errors import ConfigError
from ._options import TASKS
from ._study import StudyBase, StudyConfig
from ._text import TextStudyConfig

STUDY_FILES: dict[str, type[StudyBase]] = {"image_classification": StudyConfig, "language_modeling": TextStudyConfig}
"""the study file of each task (``task:`` picks it)"""


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed at ``loc`` (the parent of an unknown key), for the error message."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return list(model.model_fields)


def _one_line(err: ValidationError, model: type[BaseModel]) -> str:
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    path = format_loc(loc) or "<top level>"
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        hint = f"; valid keys: {', '.join(valid)}" if valid else ""
        msg = f"{path}: unknown key{hint}"
    else:
        text = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = first.get("input")
        shown = "" if isinstance(value, (dict, list)) or str(value) in text else f" (got {value!r})"
        msg = f"{path}: {text}{shown}" if loc else text  # a whole-study check names its fields itself
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return msg


def parse_config(raw: Any, source: str = "config") -> StudyBase:
    """Validate a dict (as read from YAML) into the study file of its ``task:`` (a
    :class:`StudyConfig` for image_classification, the default) or raise :class:`ConfigError`."""
    if raw is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    task = raw.get("task", "image_classification")
    model = STUDY_FILES.get(task) if isinstance(task, str) else None
    if model is None:
        raise ConfigError(f"{source}: task: unknown task {task!r}; valid: {', '.join(TASKS)}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_one_line(err, model)}") from None


def set_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set dotted keys of a study file's data before it is validated, e.g.
    ``{"search.trials": 8}`` (what the CLI's flags do)."""
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
