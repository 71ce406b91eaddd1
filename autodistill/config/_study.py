"""The whole study file: what every task's file has (:class:`StudyBase`), and the file of
each task, whose rules tie its sections together (:mod:`._rules`, :mod:`._text`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ._base import Section
from ._compress import CompressConfig
from ._data import DataConfig
from ._networks import StudentConfig, TeacherConfig, TrainConfig
from ._options import ENGINE_FOR_BACKEND
from ._recipe import AugmentConfig, DistillConfig
from ._rules import IMAGE_RULES
from ._run import Bound, ExecutionConfig, LatencyConfig, SearchConfig


class StudyBase(Section):
    """What the study file of every task holds: its name and task, the objectives and
    constraints over the task's metrics, and how the search runs, measures and writes."""

    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    """the study's folder under execution.results and its Optuna study name"""
    task: str = "image_classification"
    """the kind of work: image_classification or language_modeling (the data, networks, losses, metrics, latency probe and export formats follow from it)"""
    objectives: dict[str, Literal["max", "min"]] = Field(default_factory=dict)
    constraints: dict[str, Bound] = Field(default_factory=dict)
    """metric -> {min, max}, e.g. {latency_ms: {max: 2.0}, accuracy: {min: 0.9}}: the samplers steer away from violations, the front holds feasible trials only, and a student whose cost alone breaks a constraint is not trained"""
    search: SearchConfig = SearchConfig()
    latency: LatencyConfig = LatencyConfig()
    execution: ExecutionConfig = ExecutionConfig()

    rules: ClassVar[tuple[Callable[[Any], None], ...]] = ()
    """the cross-section rules of this task's file, in the order they run"""

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, objectives: dict[str, str]) -> dict[str, str]:
        if not objectives:
            raise ValueError("at least one objective is needed, e.g. {accuracy: max}")
        return objectives

    def _settle(self) -> None:
        """Fields that follow from others, set before the rules run (a task's file may have some)."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> StudyBase:
        self._settle()
        for rule in type(self).rules:
            rule(self)
        return self

    @property
    def results_dir(self) -> Path:
        return Path(self.execution.results) / self.name


class StudyConfig(StudyBase):
    """The study file of an image_classification study."""

    task: Literal["image_classification"] = "image_classification"
    """the kind of work: image_classification or language_modeling (the data, networks, losses, metrics, latency probe and export formats follow from it)"""
    objectives: dict[str, Literal["max", "min"]] = Field(default_factory=lambda: {"accuracy": "max", "params": "min", "latency_ms": "min"})
    """metric -> direction; image_classification metrics: accuracy, params, macs, size_mb, latency_ms"""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    teachers: list[TeacherConfig] | None = None
    """several teachers whose soft targets are averaged with their weights; the first also gives the features and attention (set this or teacher, not both)"""
    student: StudentConfig = Field(default_factory=StudentConfig)  # type: ignore[valid-type]
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()

    rules = IMAGE_RULES

    def _settle(self) -> None:
        """The primary teacher is ``teachers[0]`` when ``teachers`` is given; ``compress.engine:
        auto`` becomes the quantizer of the runtime that ``latency.backend`` times, and
        ``compress.reduce_range: auto`` is on for that of ONNX Runtime."""
        if self.compress.engine == "auto":
            self.compress = self.compress.model_copy(update={"engine": ENGINE_FOR_BACKEND.get(self.latency.backend, "x86")})
        if self.compress.reduce_range == "auto":
            self.compress = self.compress.model_copy(update={"reduce_range": self.compress.engine == "onnxruntime"})
        if self.teachers is not None:
            if not self.teachers:
                raise ValueError("teachers: expected a non-empty list of teachers ({arch: ..., weight: ...})")
            if "teacher" in self.model_fields_set and self.teacher != self.teachers[0]:
                raise ValueError("set teacher or teachers, not both (teachers[0] is the primary teacher)")
            self.teacher = self.teachers[0]

    @property
    def all_teachers(self) -> list[TeacherConfig]:
        return list(self.teachers) if self.teachers else [self.teacher]
