"""autodistill: automated knowledge distillation.

Search jointly over a student's architecture, the distillation recipe and compression, and
get the Pareto front of accuracy vs parameters vs measured latency.

>>> import autodistill
>>> config = autodistill.load_config("search_spaces/digits.yaml")
>>> result = autodistill.run_study(config)            # doctest: +SKIP
>>> autodistill.load_front("results/digits")          # doctest: +SKIP
>>> config = autodistill.load_study_config("results/digits")  # doctest: +SKIP

The names below are the real functions (their signatures and docs are theirs). Those whose
modules import Ray, ONNX or plotting libraries are imported on first use, so that
``import autodistill`` stays light (Ray workers import it too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import AutodistillError, CheckpointError, ConfigError, DataError
from .config import StudyConfig, parse_config
from .loading import dump_config, load_config, load_study_config
from .tasks import Task, get_task, list_tasks

if TYPE_CHECKING:
    from .export import export_student
    from .results import load_front, load_summary, load_trials
    from .tune.runner import StudyResult, run_study

__version__ = "0.1.0"

_LAZY = {
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
        raise AttributeError(f"module 'autodistill' has no attribute {name!r}")
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
