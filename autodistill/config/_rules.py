"""Rules that tie several sections of a study together, one small named function each.

Each takes the validated :class:`~autodistill.config.StudyConfig` and raises ``ValueError``
with a message that names the fields it is about; :data:`IMAGE_RULES` (and the language
modelling rules in :mod:`._text`) are the order they run in.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ._base import choices, has_distribution, may_be_on
from ._compress import compress_may_be_active
from ._options import SINGLE_OBJECTIVE_PRUNERS, TASK_METRICS, TASK_QUALITY
from ._recipe import parse_stages

if TYPE_CHECKING:
    from ._study import StudyConfig


def metrics_of_the_task(config: StudyConfig) -> None:
    """Objectives and constraints name metrics that the study's task reports."""
    valid = TASK_METRICS[config.task]
    for field, metrics in (("objectives", config.objectives), ("constraints", config.constraints)):
        for metric in metrics:
            if metric not in valid:
                raise ValueError(f"{field}: unknown metric {metric!r} for task {config.task}; valid: {', '.join(valid)}")


def mixing_needs_a_live_teacher(config: StudyConfig) -> None:
    augment, distill = config.augment, config.distill
    if augment.mixes and augment.teacher == "views" and (may_be_on(distill.alpha) or may_be_on(distill.alpha_end)):
        raise ValueError("augment: mixup and cutmix make images no cached view holds, so the teacher must see each batch: set augment.teacher: live")


def cached_views_need_fixed_crops(config: StudyConfig) -> None:
    augment = config.augment
    if augment.teacher == "views" and (has_distribution(augment.crop_padding) or has_distribution(augment.flip)):
        raise ValueError(
            "augment: with teacher: views the teacher's outputs are cached once per study, so crop_padding and flip "
            "must be fixed; search them with teacher: live"
        )


def stage_losses_need_a_family_teacher(config: StudyConfig) -> None:
    """Feature and attention losses read the primary teacher's stage outputs, which only the
    student families give, and match layers that compression would change."""
    if not config.distill.needs_teacher_features:
        return
    if isinstance(config.all_teachers[0].arch, str):
        raise ValueError(
            "distill: feature and attention losses need the teacher's stage outputs, which torchvision teachers do not give here; "
            "use a teacher from the student families"
        )
    if compress_may_be_active(config.compress):
        raise ValueError("distill: feature and attention losses cannot be combined with compress (pruning and int8 change the matched layers)")


def matrix_attention_needs_a_vit_teacher(config: StudyConfig) -> None:
    arch = config.teacher.arch
    if "matrix" in choices(config.distill.attention_type) and (isinstance(arch, str) or arch["family"] != "vit"):
        raise ValueError("distill.attention_type: matrix matches self-attention matrices, so the teacher must be a vit")


def feature_stages_parse(config: StudyConfig) -> None:
    for stages in choices(config.distill.feature_stages):
        parse_stages(stages, None)


def int8_and_onnxruntime_run_on_the_cpu(config: StudyConfig) -> None:
    int8 = any(q != "none" for q in choices(config.compress.quantize))
    if int8 and config.latency.device == "cuda":
        raise ValueError("compress.quantize: int8 models run on the CPU only; use latency.device: cpu")
    if config.latency.backend in ("onnxruntime", "executorch") and config.latency.device == "cuda":
        raise ValueError(f"latency.backend: {config.latency.backend} measures on the CPU here; use latency.device: cpu or another backend")
    engine, backend = config.compress.engine, config.latency.backend
    if int8 and engine != "xnnpack" and backend == "executorch":
        raise ValueError(f"latency.backend: executorch runs int8 students of compress.engine: xnnpack (got {engine}: its patterns are not XNNPACK's)")
    if int8 and engine != "x86" and backend == "torch_compile":
        raise ValueError(
            f"latency.backend: torch_compile lowers int8 students of compress.engine: x86 (got {engine}: inductor's int8 kernels take its patterns only)"
        )
    if backend == "executorch" and importlib.util.find_spec("executorch") is None:
        raise ValueError("latency.backend: executorch needs ExecuTorch, which is not installed: pip install executorch")
    if int8 and engine != "x86" and importlib.util.find_spec("executorch") is None:
        raise ValueError(f"compress.engine: {engine} needs ExecuTorch's quantizer, which is not installed: pip install executorch")


def stage_rates_match_the_stages(config: StudyConfig) -> None:
    stage_rates = config.compress.prune_stage_rates
    if stage_rates is None:
        return
    for family in choices(config.student.family):
        dims = getattr(config.student, family)
        if not hasattr(dims, "widths"):
            raise ValueError(f"compress.prune_stage_rates: student.{family} has no stages of channels to prune")
        if len(dims.widths) != len(stage_rates):
            raise ValueError(f"compress.prune_stage_rates has {len(stage_rates)} rates but student.{family} has {len(dims.widths)} stages")


def pruner_fits_the_objectives(config: StudyConfig) -> None:
    pruner, (quality, _) = config.search.pruner, TASK_QUALITY[config.task]
    if pruner in SINGLE_OBJECTIVE_PRUNERS and list(config.objectives) != [quality]:
        raise ValueError(
            f"search.pruner: {pruner} is an Optuna pruner, which needs objectives to be {quality} alone "
            f"(Optuna cannot report intermediate values in multi-objective studies); got {', '.join(config.objectives)}: use pareto"
        )
    if pruner in ("pareto", "asha") and quality not in config.objectives:
        raise ValueError(f"search.pruner: {pruner} ranks trials by {quality} at each rung, so objectives must include {quality}")


def pruning_leaves_an_epoch_to_fine_tune(config: StudyConfig) -> None:
    steps, epochs = config.compress.prune_steps, config.train.epochs
    if config.compress.prunes and isinstance(steps, int) and isinstance(epochs, int) and steps >= epochs:
        raise ValueError(f"compress.prune_steps ({steps}) needs at least {steps + 1} train.epochs (one fine-tunes after the last step), got {epochs}")


def prescreen_is_shorter_than_a_trial(config: StudyConfig) -> None:
    prescreen, epochs = config.search.prescreen, config.train.epochs
    if prescreen is None:
        return
    if prescreen.keep > prescreen.candidates:
        raise ValueError(f"search.prescreen.keep ({prescreen.keep}) is more than search.prescreen.candidates ({prescreen.candidates})")
    if isinstance(epochs, int) and prescreen.epochs >= epochs:
        raise ValueError(f"search.prescreen.epochs ({prescreen.epochs}) must be fewer than train.epochs ({epochs}): a pre-screen is a short trial")


def one_startup_design(config: StudyConfig) -> None:
    if config.search.startup != "random" and config.search.prescreen is not None:
        raise ValueError(f"search.startup: {config.search.startup} and search.prescreen both choose the first trials: use one of them")
    if config.search.startup_trials is not None and config.search.sampler in ("random", "nsga2") and config.search.startup == "random":
        raise ValueError(
            f"search.startup_trials is for the tpe and gp samplers (the trials they sample before modelling) or search.startup: spread / spread_students; "
            f"the {config.search.sampler} sampler has no start-up trials"
        )


def prescreen_without_compression(config: StudyConfig) -> None:
    if config.search.prescreen is not None and compress_may_be_active(config.compress):
        raise ValueError(
            "search.prescreen does not work with compress yet (a cut-short trial would prune or quantize at a different epoch): remove one of them"
        )


COMMON_RULES = (metrics_of_the_task, pruner_fits_the_objectives, prescreen_is_shorter_than_a_trial, one_startup_design)
"""the rules of every task's study file"""

IMAGE_RULES = (
    *COMMON_RULES,
    mixing_needs_a_live_teacher,
    stage_losses_need_a_family_teacher,
    matrix_attention_needs_a_vit_teacher,
    feature_stages_parse,
    cached_views_need_fixed_crops,
    int8_and_onnxruntime_run_on_the_cpu,
    stage_rates_match_the_stages,
    pruning_leaves_an_epoch_to_fine_tune,
    prescreen_without_compression,
)
"""the rules of an image_classification study file"""
