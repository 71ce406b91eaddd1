"""Image classification: the first :class:`~autodistill.tasks.Task`.

Data are uint8 NCHW tensors with stratified splits (:mod:`autodistill.data`); students come
from the family registry (:mod:`autodistill.students`), pruned and quantized by
:mod:`autodistill.compress`; teachers are trained once or loaded (:mod:`autodistill.teacher`)
and their logits (and stage outputs) cached once per study; a trial trains with the fused KD
loss (:mod:`autodistill.distill`); metrics are validation accuracy, params, MACs, size and
the latency of a batch of images; exports are PyTorch, TorchScript and ONNX (:mod:`.export`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..._errors import ConfigError
from ...augment import check_augment
from ...checkpoints import load_trial_student
from ...compress import Compression
from ...compress import describe as describe_compression
from ...compress.prune import NNI_MISSING, nni_available
from ...config import LatencyConfig, StudyConfig, choices
from ...data import Dataset, load_dataset
from ...distill import EpochStats, evaluate, train
from ...measure import measure_latency, state_dict_mb, static_costs
from ...students import build_student, make_spec
from ...targets import TeacherTargets
from ...teacher import compute_device, prepare_teacher, teacher_costs, teacher_outputs
from .._base import ExportResult, Task, Teachers, TrialResult, TrialRun
from .export import FORMATS, export_classifier


def _input_shape(spec: dict[str, Any]) -> tuple[int, int, int]:
    return (spec["in_channels"], spec["image_size"], spec["image_size"])


class ImageClassification(Task):
    name = "image_classification"
    export_formats = FORMATS

    latency_metrics = ("latency_ms",)
    recorded_metrics = ("accuracy", "test_accuracy", "params", "macs", "size_mb", "latency_ms")
    optional_metrics = ("accuracy_float",)  # an int8 student's validation accuracy before quantization

    def check_paths(self, config: StudyConfig, source: str) -> None:
        if "nni" in choices(config.compress.prune_backend) and not nni_available():
            raise ConfigError(f"{source}: {NNI_MISSING}")
        ckpt = config.teacher.checkpoint
        if ckpt is not None:
            if not Path(ckpt).exists():
                raise ConfigError(f"{source}: teacher.checkpoint: file not found: {ckpt}")
            if not Path(ckpt).is_file():
                raise ConfigError(f"{source}: teacher.checkpoint: not a file: {ckpt}")
        root = config.data.root
        if root is not None and config.data.dataset != "digits" and not config.data.download and not Path(os.path.expanduser(root)).is_dir():
            raise ConfigError(f"{source}: data.root: directory not found: {root}")

    def load_data(self, config: StudyConfig) -> Dataset:
        return load_dataset(config.data)

    def check_data(self, config: StudyConfig, data: Dataset) -> None:
        check_augment(config.augment, data.image_size)

    def prepare_teachers(self, config: StudyConfig, data: Dataset, log: Callable[[str], None]) -> Teachers:
        models, records = [], []
        for i, tcfg in enumerate(config.all_teachers):
            model, info = prepare_teacher(config, data, log, tcfg)
            record = _teacher_record(config, model, info, data)
            tm = record["metrics"]
            which = f"teacher {i} (weight {tcfg.weight:g})" if config.teachers else "teacher"
            log(
                f"{which}: {info.spec['family']} ({tm['params']:,} params), validation accuracy {tm['accuracy']:.4f}, "
                f"test accuracy {tm['test_accuracy']:.4f} [{info.source}]"
            )
            models.append(model)
            records.append({**record, "weight": tcfg.weight})
        return Teachers(models, records)

    def teacher_targets(self, config: StudyConfig, data: Dataset, teachers: Teachers, log: Callable[[str], None]) -> TeacherTargets:
        targets = teacher_outputs(teachers.models, data, config, log)
        live = ""
        if targets.live is not None:
            if config.distill.needs_teacher_features and targets.features is None:
                live = ", the teacher runs live on every batch (feature and attention losses)"
            elif config.augment.active:
                live = ", the teacher runs live on augmented batches"
        log(f"teacher outputs: {targets.nbytes / 2**20:.1f} MB ({targets.logits.dtype}), {targets.source}{live}")
        return targets

    def start_trial(self, trial_cfg: StudyConfig, study: StudyConfig, data: Dataset, targets: TeacherTargets, seed: int) -> ImageTrial:
        return ImageTrial(trial_cfg, study, data, targets, seed, rung_latency=self.latency_at_rungs(study))

    def load_student(self, trial_path: Path) -> tuple[nn.Module, dict[str, Any]]:
        return load_trial_student(trial_path)

    def measure_latency(self, model: nn.Module, spec: dict[str, Any], latency: LatencyConfig, repeats: int) -> dict[str, float]:
        lat = measure_latency(model, _input_shape(spec), latency, repeats=repeats)
        return {"latency_ms": lat.median_ms, "latency_ms_p10": lat.p10_ms, "latency_ms_p90": lat.p90_ms}

    def describe_student(self, spec: dict[str, Any]) -> dict[str, str]:
        return {"family": spec["family"], "compression": describe_compression(spec)}

    def export(self, config, results_dir, summary, row, number, formats, out, rule, log) -> ExportResult:
        return export_classifier(config, results_dir, summary, row, number, formats, out, rule, log)


def _teacher_record(config: StudyConfig, model: nn.Module, info, data: Dataset) -> dict[str, Any]:
    """What the study records of a teacher: architecture, source and its metrics, measured
    like a student's."""
    input_shape = tuple(data.x_train.shape[1:])
    costs = teacher_costs(model, input_shape, config)
    latency = measure_latency(model, input_shape, config.latency)
    return {
        "arch": info.spec["family"] if not info.spec["dims"] else {"family": info.spec["family"], **info.spec["dims"]},
        "family": info.spec["family"],
        "source": info.source,
        "path": info.path,
        "metrics": {"accuracy": info.val_accuracy, "test_accuracy": info.test_accuracy, **costs, "latency_ms": latency.median_ms},
    }


def student_spec(trial_cfg: StudyConfig, data: Dataset) -> dict[str, Any]:
    """Everything needed to rebuild the student: family, its resolved dims, input and output sizes."""
    family = trial_cfg.student.family
    return make_spec(family, getattr(trial_cfg.student, family).model_dump(mode="json"), data)


def trial_device(study: StudyConfig, compression: Compression | None = None) -> str:
    """CUDA for a trial given GPUs (``search.resources.gpu``), except a compressed student
    (pruning and int8 run on the CPU); else the CPU."""
    return "cpu" if compression is not None else compute_device(study)


class ImageTrial(TrialRun):
    """A student of the family registry, compressed when the trial says so, trained by the
    fused KD loss against the study's cached teacher outputs."""

    def __init__(self, trial_cfg: StudyConfig, study: StudyConfig, data: Dataset, targets: TeacherTargets, seed: int, *, rung_latency: bool):
        self.cfg, self.study, self.data, self.targets, self.seed = trial_cfg, study, data, targets, seed
        self.spec = student_spec(trial_cfg, data)
        self.epochs = trial_cfg.train.epochs
        self.model = build_student(self.spec, seed=seed)
        self.input_shape = tuple(data.x_train.shape[1:])
        self.compression = None
        if trial_cfg.compress.active:
            self.compression = Compression(trial_cfg.compress, self.spec, trial_cfg.train.epochs, data, trial_cfg.train.batch_size, self.model)
        self.costs_final = self.compression is None
        # the pareto scheduler ranks by the cost objectives at each rung: a pruned student's
        # latency is measured again after each pruning step, not only at the end
        self._rung_latency = rung_latency
        self._pruned_layers: dict | None = None
        self._costs = static_costs(self.model, self.input_shape)

    def costs(self) -> dict[str, float]:
        """params, MACs and size of the network as it is now; a pruned student's (and its
        rung latency) computed again only after it changed."""
        c = self.compression
        if c is not None and c.layers and c.layers is not self._pruned_layers:
            pruned = c.float_model()
            self._pruned_layers, self._costs = c.layers, static_costs(pruned, self.input_shape)
            if self._rung_latency:
                self._costs["latency_ms"] = measure_latency(pruned, self.input_shape, self.study.latency).median_ms
        return dict(self._costs)

    def latency(self) -> dict[str, float]:
        return {"latency_ms": measure_latency(self.model, self.input_shape, self.study.latency).median_ms}

    def train(self, on_epoch, on_checkpoint, resume) -> list[EpochStats]:
        cfg = self.cfg
        return train(
            self.model,
            self.data,
            cfg.train,
            cfg.distill,
            self.targets,
            seed=self.seed,
            on_epoch=on_epoch,
            on_checkpoint=on_checkpoint,
            resume=resume,
            compression=self.compression,
            augment=cfg.augment,
            device=trial_device(self.study, self.compression),
        )

    def finish(self, history: list[EpochStats]) -> TrialResult:
        model, spec = self.model, self.spec
        model.to("cpu", memory_format=torch.contiguous_format)
        metrics: dict[str, Any] = {}
        if self.compression is not None:
            metrics.update(self.costs())
            model = self.compression.finish()
            spec = self.compression.compressed_spec()
            if self.compression.quantized:  # accuracy and size are the int8 network's
                metrics["size_mb"] = state_dict_mb(model)
                metrics["accuracy_float"] = history[-1].accuracy
                metrics["accuracy"] = evaluate(model, self.data, "val")
        metrics["test_accuracy"] = evaluate(model, self.data, "test")
        metrics["latency_ms"] = measure_latency(model, self.input_shape, self.study.latency).median_ms
        return TrialResult(metrics, model, spec)
