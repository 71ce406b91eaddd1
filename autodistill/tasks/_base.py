"""The seam between the orchestration and a kind of work.

The orchestration (config -> search space -> Ray Tune + Optuna -> trial -> measured costs ->
front -> resume -> export) is the same for every kind of work; what differs is behind a
:class:`Task`: the data and its splits, the networks a student can be, the teacher outputs
cached once per study, the loss of a trial, the metrics it reports, the latency probe and the
export formats with their verification. The study file picks one (``task:``), and the runner,
the trainable, the results and the export ask it, never the kind of task.

A task's trial is a :class:`TrialRun`: built from the resolved trial config, it tells its
costs before training (so constraints and rung schedulers can use them), trains epoch by epoch
through callbacks that the trainable turns into Ray reports and in-flight checkpoints, and
finishes with the final metrics, the network to save and its spec.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch.nn as nn

from .._errors import AutodistillError
from ..config import TASK_METRICS, TASK_QUALITY

if TYPE_CHECKING:
    import pandas as pd

    from ..config import LatencyConfig, StudyConfig
    from ..distill.train import EpochStats

Log = Callable[[str], None]


def curve_attr(quality: str) -> str:
    """The Optuna user attribute holding a trial's per-epoch curve of the task's quality
    metric (``accuracy_curve`` for image classification)."""
    return f"{quality}_curve"


class VerificationError(AutodistillError):
    """An exported file does not reproduce the student."""


@dataclass
class ExportResult:
    out_dir: Path
    trial: int
    files: dict[str, Path]
    checks: dict[str, dict[str, float]] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class Teachers:
    """The study's teacher networks (the primary first) and what the study records of each
    (``study.json``'s ``teacher``: architecture, source, metrics)."""

    models: list[nn.Module]
    records: list[dict[str, Any]]

    @property
    def primary(self) -> dict[str, Any]:
        """The record of the primary teacher: the reference the report compares students with."""
        return self.records[0]


@dataclass
class TrialResult:
    """What a finished trial hands back: its final metrics (costs of the network as saved,
    the quality metrics, latency), the network to save and the spec that rebuilds it."""

    metrics: dict[str, Any]
    model: nn.Module
    spec: dict[str, Any]


class TrialRun(ABC):
    """One trial of a task: a student built from a resolved trial config, trained and measured.

    ``model`` is the network being trained (fault injection uses it), ``epochs`` how many
    epochs it trains; ``costs_final`` says whether :meth:`costs` are already those of the finished student (no
    compression), so that a constraint on them can be checked before training."""

    model: nn.Module
    epochs: int
    costs_final: bool = True

    @abstractmethod
    def costs(self) -> dict[str, float]:
        """The costs known without training (params, MACs, size...) of the network as it is now."""

    @abstractmethod
    def latency(self) -> dict[str, float]:
        """The latency metrics of the network as it is now (the task's latency probe)."""

    @abstractmethod
    def train(self, on_epoch: Callable[[EpochStats], None], on_checkpoint: Callable[[dict], None] | None, resume: dict | None) -> list[EpochStats]:
        """Train every epoch (from the one after ``resume``'s, when given); ``on_epoch`` gets
        each epoch's statistics, ``on_checkpoint`` what :meth:`train` needs to continue."""

    @abstractmethod
    def finish(self, history: list[EpochStats]) -> TrialResult:
        """The trained student as it is saved and deployed, measured."""


class Task(ABC):
    """A kind of work behind the orchestration (see the module doc)."""

    name: ClassVar[str]
    export_formats: ClassVar[tuple[str, ...]]
    latency_metrics: ClassVar[tuple[str, ...]]
    """the metrics the latency probe gives (measured in a trial, and again alone for the front)"""

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the task reports, each usable as an objective or a constraint."""
        return TASK_METRICS[self.name]

    recorded_metrics: ClassVar[tuple[str, ...]]
    """what a trial's final report holds of its own (beyond timings): recorded on the Optuna
    trial, and the first columns of trials.csv after number and state"""
    optional_metrics: ClassVar[tuple[str, ...]] = ()
    """recorded too, and a column of trials.csv only where some trial has them"""

    @property
    def quality(self) -> str:
        """The quality metric: reported every epoch, its curve stored on each trial
        (``<quality>_curve``), ranked by early stopping at each rung."""
        return TASK_QUALITY[self.name][0]

    @property
    def quality_mode(self) -> str:
        """``max`` or ``min``: which way the quality metric is better."""
        return TASK_QUALITY[self.name][1]

    def latency_at_rungs(self, study: StudyConfig) -> bool:
        """Whether the pareto scheduler ranks trials by a latency objective at each rung: then
        latency is measured before training, and again whenever the student changes."""
        return study.search.pruner == "pareto" and bool(set(self.latency_metrics) & set(study.objectives))

    # -- before the study ------------------------------------------------------------------
    @abstractmethod
    def check_paths(self, config: StudyConfig, source: str) -> None:
        """The files and folders the study reads are there (on the driver); ConfigError in one line."""

    @abstractmethod
    def load_data(self, config: StudyConfig) -> Any:
        """The study's data with its splits, loaded once by the driver and shared with every
        trial through Ray's object store. It has a ``summary()`` line for the log."""

    @abstractmethod
    def check_data(self, config: StudyConfig, data: Any) -> None:
        """Rules that need the loaded data (e.g. augmentation that fits the image size)."""

    @abstractmethod
    def prepare_teachers(self, config: StudyConfig, data: Any, log: Log) -> Teachers:
        """The study's teachers, loaded or trained once (and cached), measured and logged."""

    @abstractmethod
    def teacher_targets(self, config: StudyConfig, data: Any, teachers: Teachers, log: Log) -> Any:
        """What trials need of the teachers, computed once per study (and cached), logged."""

    # -- a trial -----------------------------------------------------------------------------
    @abstractmethod
    def start_trial(self, trial_cfg: StudyConfig, study: StudyConfig, data: Any, targets: Any, seed: int) -> TrialRun:
        """The trial of a resolved config (every searched field fixed), its student built."""

    # -- after the search ------------------------------------------------------------------
    @abstractmethod
    def load_student(self, trial_path: Path) -> tuple[nn.Module, dict[str, Any]]:
        """(trained network, spec) of a finished trial's folder ``trials/<number>/``."""

    @abstractmethod
    def measure_latency(self, model: nn.Module, spec: dict[str, Any], latency: LatencyConfig, repeats: int) -> dict[str, float]:
        """The latency metrics of a saved student, each with ``_p10`` / ``_p90`` spread."""

    @abstractmethod
    def describe_student(self, spec: dict[str, Any]) -> dict[str, str]:
        """Columns that describe a front member in ``pareto.csv`` (e.g. family, compression)."""

    @abstractmethod
    def export(
        self,
        config: StudyConfig,
        results_dir: Path,
        summary: dict[str, Any],
        row: pd.Series,
        number: int,
        formats: tuple[str, ...] | None,
        out: Path,
        rule: str,
        log: Log,
    ) -> ExportResult:
        """Write trial ``number``'s student (``row`` of the trials table; ``summary`` is
        ``study.json``) in ``formats`` (None: every format that fits the student) under
        ``out`` (atomically), verify every file against the PyTorch network, and write its
        model card."""
