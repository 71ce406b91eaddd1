"""YAML distributions -> Optuna define-by-run suggestions (pure functions).

A study's search space is the list of :class:`Dimension` found in its config. Dimensions
under ``student.<family>`` are conditional: they are sampled only when ``student.family``
is that family, so a trial never carries parameters of an unused family.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ._errors import ConfigError
from ._tunable import Choice, Distribution, FloatRange, IntRange, is_distribution
from .config import StudyConfig, format_loc, parse_config

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Dimension:
    loc: tuple  # e.g. ("student", "cnn", "widths", 0)
    dist: Distribution
    condition: tuple[str, str] | None = None  # (param name, value) that must hold

    @property
    def name(self) -> str:
        """The Optuna parameter name, e.g. ``student.cnn.widths[0]``."""
        return format_loc(self.loc)


def _walk(node: Any, loc: tuple):
    if is_distribution(node):
        yield loc, node
    elif isinstance(node, BaseModel):
        for field in type(node).model_fields:
            yield from _walk(getattr(node, field), loc + (field,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, loc + (i,))
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, loc + (key,))


def _family_choices(config: StudyConfig) -> tuple[str, ...] | None:
    """The student families a study samples, or None when its student has no per-family
    blocks (a language model's student is the teacher's architecture)."""
    family = getattr(config.student, "family", None)
    if family is None:
        return None
    return family.choice if isinstance(family, Choice) else (family,)


def search_space(config: StudyConfig) -> list[Dimension]:
    """Every searched dimension of ``config`` in sampling order (family before its dims)."""
    families = _family_choices(config)
    dims = []
    for loc, dist in _walk(config, ()):
        if families is not None and loc[0] == "student" and len(loc) > 1 and loc[1] != "family":
            if loc[1] not in families:
                continue  # dims of a family the study never samples
            condition = ("student.family", loc[1]) if len(families) > 1 else None
            dims.append(Dimension(loc, dist, condition))
        else:
            dims.append(Dimension(loc, dist))
    return dims


def suggest(trial: optuna.Trial, dim: Dimension) -> Any:
    d = dim.dist
    if isinstance(d, Choice):
        return trial.suggest_categorical(dim.name, list(d.choice))
    if isinstance(d, IntRange):
        return trial.suggest_int(dim.name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatRange):
        return trial.suggest_float(dim.name, d.low, d.high, step=d.step, log=d.log)
    raise TypeError(f"not a distribution: {d!r}")


def sample(trial: optuna.Trial, space: list[Dimension]) -> dict[str, Any]:
    """Define-by-run: ask ``trial`` for every active dimension; returns {name: value}."""
    params: dict[str, Any] = {}
    for dim in space:
        if dim.condition is not None and params.get(dim.condition[0]) != dim.condition[1]:
            continue
        params[dim.name] = suggest(trial, dim)
    return params


def resolve(config: StudyConfig, params: dict[str, Any]) -> StudyConfig:
    """The config of one trial: every distribution replaced by its sampled value.

    Dimensions without a value in ``params`` (an inactive family) are left as they are;
    nothing reads them. The result is validated again, so a trial reads typed values only.
    """
    by_name = {dim.name: dim for dim in search_space(config)}
    raw = copy.deepcopy(config.model_dump(mode="json"))
    for name, value in params.items():
        dim = by_name.get(name)
        if dim is None:
            raise KeyError(f"parameter {name!r} is not in this study's search space")
        node = raw
        for part in dim.loc[:-1]:
            node = node[part]
        node[dim.loc[-1]] = value
    return parse_config(raw, "trial config")


def describe(space: list[Dimension]) -> list[dict[str, str]]:
    """Rows for ``autodistill validate``: dimension, distribution, condition."""
    return [
        {
            "dimension": dim.name,
            "distribution": dim.dist.describe(),
            "when": f"{dim.condition[0]} = {dim.condition[1]}" if dim.condition else "",
        }
        for dim in space
    ]


def check_points(config: StudyConfig, source: str = "config") -> None:
    """Each of ``search.points_to_evaluate`` names dimensions of this study's space with
    values inside their distributions, and its family's dimensions only; raises
    :class:`ConfigError` in one line."""
    space = {dim.name: dim for dim in search_space(config)}
    for i, point in enumerate(config.search.points_to_evaluate):
        where = f"{source}: search.points_to_evaluate[{i}]"
        for name, value in point.items():
            dim = space.get(name)
            if dim is None:
                valid = ", ".join(space) or "(the study searches nothing)"
                raise ConfigError(f"{where}: {name!r} is not a searched dimension; searched: {valid}")
            if dim.condition is not None and point.get(dim.condition[0], dim.condition[1]) != dim.condition[1]:
                raise ConfigError(f"{where}: {name!r} applies only when {dim.condition[0]} = {dim.condition[1]}")
            if not _inside(dim.dist, value):
                raise ConfigError(f"{where}: {name} = {value!r} is outside {dim.dist.describe()}")


def _inside(dist: Distribution, value: Any) -> bool:
    if isinstance(dist, Choice):
        return value in dist.choice
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntRange) and not float(value).is_integer():
        return False
    return dist.low <= value <= dist.high
