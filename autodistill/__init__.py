"""autodistill: automated knowledge distillation.

Search jointly over a student's architecture, the distillation recipe and compression, and
get the Pareto front of accuracy vs parameters vs measured latency.

>>> import autodistill
>>> config = autodistill.load_config("search_spaces/digits.yaml")
>>> result = autodistill.run_study(config)            # doctest: +SKIP
>>> autodistill.load_front("results/digits")          # doctest: +SKIP
>>> config = autodistill.load_study_config("results/digits")  # doctest: +SKIP

The names below are the real functions (their signatures and docs are theirs), imported on
first use, as are the submodules (``autodistill.config``, ...): ``import autodistill`` imports
neither torch nor Ray, so that the command can start Ray before torch loads
(:mod:`autodistill._launch`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ._errors import AutodistillError, CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from .config import StudyConfig, parse_config
    from .export import export_student
    from .loading import dump_config, load_config, load_study_config
    from .results import load_front, load_summary, load_trials
    from .tasks import Task, get_task, list_tasks
    from .tune.runner import StudyResult, run_study

__version__ = "0.1.0"

_LAZY = {
    "StudyConfig": "autodistill.config",
    "parse_config": "autodistill.config",
    "dump_config": "autodistill.loading",
    "load_config": "autodistill.loading",
    "load_study_config": "autodistill.loading",
    "Task": "autodistill.tasks",
    "get_task": "autodistill.tasks",
    "list_tasks": "autodistill.tasks",
    "run_study": "autodistill.tune.runner",
    "StudyResult": "autodistill.tune.runner",
    "export_student": "autodistill.export",
    "load_trials": "autodistill.results",
    "load_front": "autodistill.results",
    "load_summary": "autodistill.results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'autodistill' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule (and now an attribute)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AutodistillError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "StudyConfig",
    "StudyResult",
    "Task",
    "dump_config",
    "export_student",
    "get_task",
    "list_tasks",
    "load_config",
    "load_front",
    "load_study_config",
    "load_summary",
    "load_trials",
    "parse_config",
    "run_study",
]
