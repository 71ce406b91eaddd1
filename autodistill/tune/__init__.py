"""Ray Tune assembly: the Optuna-backed searcher, the trial trainable, the study runner."""

from .runner import StudyResult, run_study

__all__ = ["StudyResult", "run_study"]
