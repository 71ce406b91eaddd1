"""The whole study file: its sections, and the rules that tie them together (:mod:`._rules`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import Section
from ._compress import CompressConfig
from ._data import DataConfig
from ._networks import StudentConfig, TeacherConfig, TrainConfig
from ._options import TASKS
from ._recipe import AugmentConfig, DistillConfig
from ._rules import RULES
from ._run import Bound, ExecutionConfig, LatencyConfig, SearchConfig


class StudyConfig(Section):
    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    """the study's folder under execution.results and its Optuna study name"""
    task: Literal[TASKS] = "image_classification"  # type: ignore[valid-type]
    """the kind of work: image_classification (the data, networks, losses, metrics, latency probe and export formats follow from it)"""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    teachers: list[TeacherConfig] | None = None
    """several teachers whose soft targets are averaged with their weights; the first also gives the features and attention (set this or teacher, not both)"""
    student: StudentConfig = Field(default_factory=StudentConfig)  # type: ignore[valid-type]
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    objectives: dict[str, Literal["max", "min"]] = Field(default_factory=lambda: {"accuracy": "max", "params": "min", "latency_ms": "min"})
    """metric -> direction; image_classification metrics: accuracy, params, macs, size_mb, latency_ms"""
    constraints: dict[str, Bound] = Field(default_factory=dict)
    """metric -> {min, max}, e.g. {latency_ms: {max: 2.0}, accuracy: {min: 0.9}}: the samplers steer away from violations, the front holds feasible trials only, and a student whose cost alone breaks a constraint is not trained"""
    search: SearchConfig = SearchConfig()
    latency: LatencyConfig = LatencyConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, objectives: dict[str, str]) -> dict[str, str]:
        if not objectives:
            raise ValueError("at least one objective is needed, e.g. {accuracy: max}")
        return objectives

    @model_validator(mode="after")
    def _one_teacher_section(self) -> StudyConfig:
        if self.teachers is not None:
            if not self.teachers:
                raise ValueError("teachers: expected a non-empty list of teachers ({arch: ..., weight: ...})")
            if "teacher" in self.model_fields_set and self.teacher != self.teachers[0]:
                raise ValueError("set teacher or teachers, not both (teachers[0] is the primary teacher)")
            self.teacher = self.teachers[0]
        return self

    @model_validator(mode="after")
    def _cross_field_rules(self) -> StudyConfig:
        for rule in RULES:
            rule(self)
        return self

    @property
    def all_teachers(self) -> list[TeacherConfig]:
        return list(self.teachers) if self.teachers else [self.teacher]

    @property
    def results_dir(self) -> Path:
        return Path(self.execution.results) / self.name
