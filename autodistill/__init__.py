"""autodistill: automated knowledge distillation.

Search jointly over a student's architecture, the distillation recipe and compression, and
get the Pareto front of accuracy vs parameters vs measured latency.

>>> import autodistill
>>> config = autodistill.load_config("search_spaces/digits.yaml")
>>> result = autodistill.run_study(config)            # doctest: +SKIP
>>> autodistill.load_front("results/digits")          # doctest: +SKIP
"""

from ._errors import AutodistillError, CheckpointError, ConfigError, DataError
from .config import StudyConfig, load_config, parse_config

__version__ = "0.1.0"


def run_study(config, log=print, resume=False):
    """Run a study (see :func:`autodistill.tune.runner.run_study`); ``resume=True`` finishes
    an interrupted one."""
    from .tune.runner import run_study as _run

    return _run(config, log=log, resume=resume)


def export_student(results_dir, pick="knee", **kwargs):
    """Export and verify a study's student (see :func:`autodistill.export.export_student`)."""
    from .export import export_student as _export

    return _export(results_dir, pick, **kwargs)


def load_trials(results_dir):
    """The trials of a study as a pandas DataFrame (``trials.csv``)."""
    from .results import load_trials as _load

    return _load(results_dir)


def load_front(results_dir):
    """The Pareto front of a study as a pandas DataFrame (``pareto.csv``)."""
    from .results import load_front as _load

    return _load(results_dir)


__all__ = [
    "AutodistillError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "StudyConfig",
    "export_student",
    "load_config",
    "load_front",
    "load_trials",
    "parse_config",
    "run_study",
]
