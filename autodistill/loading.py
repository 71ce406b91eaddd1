"""Reading and writing a study file: above the config models and the search space, since a
study is only loaded once both agree (every ``search.points_to_evaluate`` lies in the space)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import layout
from ._errors import ConfigError
from .config import StudyConfig, parse_config, set_overrides
from .space import check_points
from .tasks import get_task


def check_paths(config: StudyConfig, source: str = "config") -> StudyConfig:
    """What a study needs on the driver is there (its task says what: for images,
    ``teacher.checkpoint`` and ``data.root`` exist, NNI is installed when
    ``compress.prune_backend`` may be nni). Raises :class:`ConfigError` in one line."""
    get_task(config.task).check_paths(config, source)
    return config


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file as data (``yaml.safe_load``), or :class:`ConfigError` in one line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: file not found")
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study file. ``overrides`` are dotted keys set before validation,
    e.g. ``{"search.trials": 8}`` (what the CLI flags do)."""
    raw = read_yaml(path)
    if overrides and isinstance(raw, dict):
        set_overrides(raw, overrides)
    config = check_paths(parse_config(raw, str(path)), str(path))
    check_points(config, str(path))
    return config


def load_study_config(results_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The config a study was run with (``<results_dir>/config.yaml``), pointed at
    ``results_dir`` wherever the folder now lies: for ``resume``, ``export`` and notebooks."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir}: no such results directory")
    path = layout.config_file(results_dir)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {results_dir} a study's results directory?")
    config = load_config(path, {**(overrides or {}), "execution.results": str(results_dir.resolve().parent)})
    if config.name != results_dir.resolve().name:
        raise ConfigError(f"{results_dir}: the folder of study {config.name!r} must keep its name (the Optuna study is named after it)")
    return config


def dump_config(config: StudyConfig) -> str:
    """The resolved config as YAML (distributions written back in their YAML form)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
