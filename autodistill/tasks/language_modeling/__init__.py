"""Causal language modelling: a Qwen2 or Llama teacher (``transformers``) distilled into
smaller models of its architecture, searched over shape, initialisation and recipe.

Data are token sequences of a corpus split by document (:mod:`.corpus`); the teacher is a
local checkpoint or trained here once and cached, and its top-k logits of every training
sequence are cached once per study (:mod:`.teacher`); a trial trains with token-level KD, CE,
hidden-state and attention losses (:mod:`.train`, :mod:`.losses`); metrics are validation
perplexity and next-token accuracy, parameters (all and non-embedding), size, and the prefill
and per-token decode latency (:mod:`.latency`); exports are a Hugging Face directory and an
ONNX decoder (:mod:`.export`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..._errors import ConfigError
from ...config import LatencyConfig, TextStudyConfig, choices, has_distribution, may_be_on
from ...distill import EpochStats
from ...measure import state_dict_mb
from ...teacher import compute_device
from .._base import ExportResult, Task, Teachers, TrialResult, TrialRun
from . import models
from .corpus import TOKENIZER_FILES, TextData, load_corpus, quiet_transformers
from .latency import measure_lm_latency
from .teacher import prepare_teacher, teacher_targets
from .train import TextTargets, evaluate, train_lm

CALIBRATION = 8
"""training sequences whose activations rank the teacher's channels, neurons and heads (pruned_teacher)"""


class LanguageModeling(Task):
    name = "language_modeling"
    export_formats = ("hf", "onnx")
    latency_metrics = ("prefill_ms", "decode_ms_per_token")
    recorded_metrics = (
        "perplexity",
        "token_accuracy",
        "test_perplexity",
        "test_token_accuracy",
        "params",
        "params_non_embedding",
        "params_embedding",
        "size_mb",
        "prefill_ms",
        "decode_ms_per_token",
    )
    optional_metrics = ("init_used",)

    def check_paths(self, config: TextStudyConfig, source: str) -> None:
        corpus = config.data.corpus
        if corpus != "pydoc_topics" and not Path(corpus).exists():
            raise ConfigError(f"{source}: data.corpus: not found: {corpus}")
        ckpt = config.teacher.checkpoint
        if ckpt is not None:
            if not Path(ckpt).is_dir():
                raise ConfigError(f"{source}: teacher.checkpoint: not a directory: {ckpt}")
            if not (Path(ckpt) / "config.json").is_file():
                raise ConfigError(f"{source}: teacher.checkpoint: {ckpt}: not a transformers checkpoint (no config.json)")
            if not any((Path(ckpt) / name).is_file() for name in TOKENIZER_FILES):
                raise ConfigError(f"{source}: teacher.checkpoint: {ckpt}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); the student uses the teacher's")

    def load_data(self, config: TextStudyConfig) -> TextData:
        quiet_transformers()
        return load_corpus(config.data, config.teacher.checkpoint)

    def check_data(self, config: TextStudyConfig, data: TextData) -> None:
        syn = config.data.synthetic
        if syn.count and syn.prompt_tokens >= data.seq_len:
            raise ConfigError(f"data.synthetic.prompt_tokens ({syn.prompt_tokens}) must be shorter than data.seq_len ({data.seq_len})")

    def prepare_teachers(self, config: TextStudyConfig, data: TextData, log: Callable[[str], None]) -> Teachers:
        model, record = prepare_teacher(config, data, log)
        m = record["metrics"]
        log(
            f"teacher: {record['family']} ({m['params']:,} params, {m['params_non_embedding']:,} non-embedding), validation perplexity "
            f"{m['perplexity']:.3f}, token accuracy {m['token_accuracy']:.4f}, test perplexity {m['test_perplexity']:.3f} [{record['source']}]"
        )
        record["metrics"].update(measure_lm_latency(model, config.latency))
        _check_student_shapes(config, model)
        return Teachers([model], [record])

    def teacher_targets(self, config: TextStudyConfig, data: TextData, teachers: Teachers, log: Callable[[str], None]) -> TextTargets:
        teacher = teachers.models[0]
        targets = teacher_targets(config, data, teacher, log)  # ships the teacher when hidden or attention losses may be on
        if may_be_on(config.distill.attention_weight):
            models.set_attention(teacher, "eager")  # sdpa gives no attention matrices
        if any(init != "random" for init in choices(config.student.init)):
            targets.teacher = teacher  # a student may start from its layers
        if targets.teacher is not None:
            targets.teacher = models.portable(targets.teacher)
        targets.teacher_config = teacher.config.to_dict()
        return targets

    def start_trial(self, trial_cfg: TextStudyConfig, study: TextStudyConfig, data: TextData, targets: TextTargets, seed: int) -> TextTrial:
        return TextTrial(trial_cfg, study, data, targets, seed)

    def load_student(self, trial_path: Path) -> tuple[nn.Module, dict[str, Any]]:
        return models.load_trial_student(trial_path)

    def measure_latency(self, model: nn.Module, spec: dict[str, Any], latency: LatencyConfig, repeats: int) -> dict[str, float]:
        return measure_lm_latency(model, latency, repeats)

    def describe_student(self, spec: dict[str, Any]) -> dict[str, str]:
        shape = spec["shape"]
        return {
            "family": spec["family"],
            "shape": f"{shape['num_hidden_layers']}x{shape['hidden_size']}, {shape['num_attention_heads']}/{shape['num_key_value_heads']} heads, mlp {shape['intermediate_size']}",
        }

    def export(self, config, results_dir, summary, row, number, formats, out, rule, log) -> ExportResult:
        from .export import export_lm

        in_trial = tuple(f"{m}_in_trial" for m in self.latency_metrics)  # the latency measured during the search, beside the re-measured one
        return export_lm(
            config, results_dir, summary, row, number, formats or self.export_formats, out, rule, log, card_metrics=(*self.recorded_metrics, *in_trial)
        )


def _check_student_shapes(config: TextStudyConfig, teacher: nn.Module) -> None:
    """A fixed student shape fits the teacher's architecture (a searched one is checked per trial)."""
    if has_distribution(config.student):
        return
    try:
        models.student_config(teacher.config, _shape(config.student))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _shape(student) -> dict[str, Any]:
    return {k: getattr(student, k) for k in models.SHAPE}


class TextTrial(TrialRun):
    """A student of the teacher's architecture at the trial's shape, started as the trial
    says, trained against the study's cached teacher outputs."""

    def __init__(self, trial_cfg: TextStudyConfig, study: TextStudyConfig, data: TextData, targets: TextTargets, seed: int):
        quiet_transformers()
        self.cfg, self.study, self.data, self.targets, self.seed = trial_cfg, study, data, targets, seed
        self.epochs = trial_cfg.train.epochs
        teacher_config = models.config_class(targets.teacher_config["model_type"]).from_dict(targets.teacher_config)
        config = models.student_config(teacher_config, _shape(trial_cfg.student))
        attention = "eager" if trial_cfg.distill.attention_weight > 0 else "sdpa"
        self.model = models.build(config, seed, attention)
        calibration = data.train[:CALIBRATION]
        teacher = targets.teacher
        self.init_used = models.init_student(self.model, teacher, trial_cfg.student.init, calibration) if teacher is not None else "random"
        self.spec = {
            "family": config.model_type,
            "shape": models.shape_of(config),
            "config": {k: v for k, v in config.to_dict().items() if k != "_attn_implementation_autoset"},
            "init_used": self.init_used,
        }
        self._costs = {**models.param_counts(self.model), "size_mb": state_dict_mb(self.model)}

    def costs(self) -> dict[str, float]:
        return dict(self._costs)

    def latency(self) -> dict[str, float]:
        measured = measure_lm_latency(self.model, self.study.latency)
        return {m: measured[m] for m in ("prefill_ms", "decode_ms_per_token")}

    def train(self, on_epoch, on_checkpoint, resume) -> list[EpochStats]:
        cfg = self.cfg
        return train_lm(
            self.model,
            self.data.train,
            self.data.val,
            cfg.train,
            cfg.distill,
            self.targets,
            seed=self.seed,
            on_epoch=on_epoch,
            on_checkpoint=on_checkpoint,
            resume=resume,
            device=compute_device(self.study),
        )

    def finish(self, history: list[EpochStats]) -> TrialResult:
        model = self.model.to("cpu").eval()
        models.set_attention(model, "sdpa")
        test = evaluate(model, self.data.test)
        metrics: dict[str, Any] = {"test_perplexity": test["perplexity"], "test_token_accuracy": test["token_accuracy"], "init_used": self.init_used}
        metrics.update(self.latency())
        spec = {**self.spec, "config": {**self.spec["config"]}}
        return TrialResult(metrics, model, spec)
