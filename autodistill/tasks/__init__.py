"""Kinds of work behind one interface (:class:`Task`); the study file's ``task:`` picks one.

A new kind of task is one new package here that implements :class:`Task` and one entry in
:data:`TASK_TYPES` (and its name, metrics and quality metric in
:mod:`autodistill.config._options`; a test keeps the two lists equal).
"""

from __future__ import annotations

from ._base import ExportResult, Task, Teachers, TrialResult, TrialRun, VerificationError, curve_attr
from .image_classification import ImageClassification
from .language_modeling import LanguageModeling

TASK_TYPES: dict[str, type[Task]] = {
    ImageClassification.name: ImageClassification,
    LanguageModeling.name: LanguageModeling,
}


def list_tasks() -> list[str]:
    return sorted(TASK_TYPES)


def get_task(name: str) -> Task:
    """The task called ``name`` (what ``task:`` says in a study file)."""
    try:
        return TASK_TYPES[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(list_tasks())}") from None


__all__ = ["TASK_TYPES", "ExportResult", "Task", "Teachers", "TrialResult", "TrialRun", "VerificationError", "curve_attr", "get_task", "list_tasks"]
