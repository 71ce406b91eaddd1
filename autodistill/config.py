"""The study file: pydantic models of every YAML section.

Validation happens once, in the driver, before Ray starts. Errors are turned into one line
that names the field path and the offending value (:func:`load_config`). Unknown keys are
errors everywhere. ``yaml.safe_load`` only: a config never runs code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ._errors import ConfigError
from ._tunable import fixed_only, is_distribution, tunable
from .students import get_family, list_families

METRICS = ("accuracy", "params", "macs", "size_mb", "latency_ms")
"""Metric names used everywhere: validation accuracy (0-1), parameters, multiply-accumulates
per image, state-dict size in MB, and latency in ms per batch of ``latency.batch_size``."""

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")
TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine", "step", "sigmoid", "adaptive")
WEIGHT_SCHEDULES = ("linear", "cosine", "sigmoid")
FEATURE_DISTANCES = ("mse", "cosine")
ATTENTION_TYPES = ("spatial", "cam", "matrix")
SAMPLE_WEIGHTING = ("none", "confidence", "entropy")
BALANCE = ("none", "gradnorm")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DataConfig(_Section):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    """digits (bundled with scikit-learn), mnist, fashion_mnist, cifar10, cifar100, imagefolder"""
    root: str | None = None
    """directory of a torchvision dataset or of the imagefolder class folders"""
    download: bool = False
    """let torchvision download the dataset into ``root`` (needs internet)"""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """share of the training data held out for validation (what the search optimises)"""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """share held out for test, for datasets without an official test split (digits, imagefolder)"""
    image_size: int | None = Field(None, ge=4, le=1024)
    """imagefolder only: images are resized to this square size (default 64)"""
    split_seed: int = 0
    """seed of the stratified splits: fixed, so every trial sees the same splits"""
    max_train_samples: int | None = Field(None, ge=10)
    """use at most this many training samples (stratified), for quick studies"""
    storage: Literal["auto", "memory", "stream"] = "auto"
    """imagefolder: memory = decoded once into uint8 tensors (batches cut by indexing); stream = decoded per batch from disk by a DataLoader (for folders that do not fit); auto = memory when it fits memory_limit_gb. Other datasets are always in memory"""
    memory_limit_gb: float = Field(8.0, gt=0)
    """the most decoded image data held in memory (data.storage auto / memory)"""
    workers: int = Field(2, ge=0, le=64)
    """DataLoader worker processes per trial that decode a streamed image folder (0 = in the trial's own process)"""

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction must leave at least 10% for training, got {self.val_fraction} + {self.test_fraction}"
            )
        if self.dataset != "digits" and self.root is None:
            raise ValueError(f"dataset {self.dataset!r} needs data.root (the directory holding it)")
        if self.image_size is not None and self.dataset != "imagefolder":
            raise ValueError("image_size applies to imagefolder only (other datasets keep their native size)")
        if self.storage == "stream" and self.dataset != "imagefolder":
            raise ValueError(f"storage: stream applies to imagefolder only ({self.dataset} is loaded into memory whole)")
        return self


Optimizer = tunable("str", choices=("adamw", "sgd"))


class TrainConfig(_Section):
    epochs: tunable("int", ge=1, le=10000) = 15
    """epochs of one trial's training"""
    lr: tunable("float", gt=0, le=10) = 3e-3
    """peak learning rate; decays with a cosine to 0 over the trial"""
    batch_size: tunable("int", ge=1, le=65536) = 64
    """images per optimisation step"""
    optimizer: Optimizer = "adamw"
    """adamw, or sgd (momentum, nesterov)"""
    weight_decay: tunable("float", ge=0, le=1) = 5e-4
    """decoupled (AdamW) or L2 (SGD) weight decay; not on biases and norms"""
    momentum: tunable("float", ge=0, lt=1) = 0.9
    """sgd only"""
    warmup_epochs: tunable("float", ge=0) = 0.0
    """linear learning-rate warm-up, in epochs (fractions allowed)"""


class TeacherTrainConfig(_Section):
    """How a teacher is trained when no checkpoint is given (fixed values only)."""

    epochs: fixed_only("int", ge=1) = 30
    """epochs of the teacher's training (once per study config; cached)"""
    lr: fixed_only("float", gt=0) = 3e-3
    """peak learning rate, cosine decay"""
    batch_size: fixed_only("int", ge=1) = 64
    optimizer: fixed_only("str", choices=("adamw", "sgd")) = "adamw"
    """adamw or sgd"""
    weight_decay: fixed_only("float", ge=0) = 5e-4
    momentum: fixed_only("float", ge=0, lt=1) = 0.9
    """sgd only"""
    warmup_epochs: fixed_only("float", ge=0) = 0.0
    """linear learning-rate warm-up, in epochs"""
    seed: int = 0
    """seed of the teacher's initialisation and batch order"""


class TeacherConfig(_Section):
    arch: str | dict[str, Any] = Field(default_factory=lambda: {"family": "resnet", "widths": [32, 64, 128], "depths": [2, 2, 2]})
    """a student family with fixed dims ({family: resnet, widths: [...], ...}) or 'torchvision:<model name>'"""
    checkpoint: str | None = None
    """a state dict (.pt) for ``arch``; without one the teacher is trained once and cached"""
    train: TeacherTrainConfig = TeacherTrainConfig()
    weight: float = Field(1.0, gt=0)
    """weight of this teacher's soft targets in a multi-teacher study (``teachers:``); weights are normalised to sum 1"""

    @field_validator("arch")
    @classmethod
    def _check_arch(cls, arch: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(arch, str):
            if not arch.startswith("torchvision:"):
                raise ValueError(f"expected {{family: ..., <dims>}} or 'torchvision:<model>', got {arch!r}")
            from .students.torchvision_models import check_torchvision_name

            check_torchvision_name(arch.split(":", 1)[1])
            return arch
        if "family" not in arch:
            raise ValueError(f"needs a 'family' key (one of {', '.join(list_families())})")
        dims = {k: v for k, v in arch.items() if k != "family"}
        family = get_family(arch["family"])
        validated = family.dims.model_validate(dims)
        if _has_distribution(validated):
            raise ValueError("a teacher architecture is fixed: it cannot hold distributions")
        return {"family": arch["family"], **validated.model_dump(mode="json")}

    @field_validator("checkpoint")
    @classmethod
    def _expand_checkpoint(cls, path: str | None) -> str | None:
        # existence is checked by check_paths, on the driver only: a trial re-validates its
        # config on a worker node, which may not see the driver's files
        return None if path is None else str(Path(os.path.expanduser(path)))


def _student_section() -> type[BaseModel]:
    """``student:`` has ``family`` plus one block of dimensions per registered family."""
    fields: dict[str, Any] = {
        "family": (tunable("str", choices=list_families), Field("cnn", description="student family: " + ", ".join(list_families()))),
    }
    for name in list_families():
        dims_model = get_family(name).dims
        fields[name] = (dims_model, Field(default_factory=dims_model))
    return create_model("StudentConfig", __base__=_Section, __module__=__name__, **fields)


StudentConfig = _student_section()


class TemperatureConfig(_Section):
    schedule: tunable("str", choices=TEMPERATURE_SCHEDULES) = "constant"
    """constant (start); linear / cosine / step / sigmoid from start to end over the training; adaptive: set per batch by the teacher's entropy (a confident teacher gets start, an unsure one end)"""
    start: tunable("float", gt=0, le=100) = 4.0
    """temperature at the first step (the only one for constant)"""
    end: tunable("float", gt=0, le=100) = 1.0
    """ignored by the constant schedule"""
    steps: tunable("int", ge=2, le=100) = 2
    """step schedule: number of plateaus between start and end"""
    sharpness: tunable("float", gt=0, le=100) = 10.0
    """sigmoid schedule: slope at mid-training (higher = a sharper switch from start to end)"""


class DistillConfig(_Section):
    """The loss of a trial::

        total = w_ce * CE + w_kd * T^2 * KL + feature_weight * sum(feature) + attention_weight * sum(attention)

    with w_kd = alpha (scheduled to alpha_end when set) and w_ce = ce_weight, or 1 - w_kd when
    ce_weight is null. Feature and attention terms match the student's stages (feature_stages)
    to the teacher's at the same relative depth; the teacher's stage outputs are cached once per
    study (execution.teacher_cache_gb) or, with augmentation, computed on every batch."""

    alpha: tunable("float", ge=0, le=1) = 0.7
    """weight of the soft-label KD term (at the first step, when alpha_end is set)"""
    alpha_end: tunable("float", ge=0, le=1, optional=True) = None
    """KD weight at the last step (e.g. 0.7 -> 0.3); null keeps alpha constant"""
    alpha_schedule: tunable("str", choices=WEIGHT_SCHEDULES) = "linear"
    """how the KD weight goes from alpha to alpha_end"""
    ce_weight: tunable("float", ge=0, le=10, optional=True) = None
    """weight of the hard-label cross-entropy; null = 1 - the KD weight"""
    temperature: TemperatureConfig = TemperatureConfig()
    sample_weighting: tunable("str", choices=SAMPLE_WEIGHTING) = "none"
    """per-sample KD weight from the teacher: confidence (1 - max prob) or entropy; harder inputs get more teacher (mean 1 over the batch)"""
    kd_clamp: tunable("float", gt=0, optional=True) = None
    """cap on the T^2-compensated KD term: above it the term is scaled down to the cap (its gradient with it); null = no cap"""
    feature_weight: tunable("float", ge=0, le=100) = 0.0
    """FitNets feature loss weight (student stage -> 1x1 projector -> teacher stage); 0 = off"""
    feature_stages: tunable("str") = "last"
    """which student stages are matched: last, all, or indices like '1,2' (negative counts from the end)"""
    feature_distance: tunable("str", choices=FEATURE_DISTANCES) = "mse"
    """mse of the projected features, or cosine (1 - cosine similarity per position)"""
    attention_weight: tunable("float", ge=0, le=1000) = 0.0
    """attention loss weight; 0 = off"""
    attention_type: tunable("str", choices=ATTENTION_TYPES) = "spatial"
    """spatial: attention transfer (channel-pooled |A|^p maps of the matched stages); cam: class activation maps of the true class (last stage); matrix: self-attention matrices per layer (ViT student and teacher; spatial otherwise)"""
    attention_p: tunable("float", gt=0, le=8) = 2.0
    """exponent p of the spatial attention maps"""
    balance: tunable("str", choices=BALANCE) = "none"
    """gradnorm: each weighted term is rescaled by the mean gradient norm over its own, clamped to [0.5, 2] (one extra backward per term)"""
    stage1_fraction: tunable("float", ge=0, lt=1) = 0.0
    """staged training: this fraction of the epochs trains on the feature loss alone, then CE, KD and attention join; 0 = one stage"""

    @property
    def needs_teacher_features(self) -> bool:
        """Whether the teacher's stage outputs may be needed (a searched weight counts)."""
        return _may_be_on(self.feature_weight) or _may_be_on(self.attention_weight)


AUGMENT_TEACHER = ("views", "live")


class AugmentConfig(_Section):
    """Training-time augmentation, applied in batch to the tensors (no per-sample Python)."""

    crop_padding: tunable("int", ge=0, le=16) = 0
    """random crop: pad each side by this many pixels and crop back to the image size (images of 16 px and more); 0 = off"""
    flip: tunable("bool") = False
    """random horizontal flip (images of 16 px and more)"""
    teacher: fixed_only("str", choices=AUGMENT_TEACHER) = "views"
    """how the teacher sees the augmented batch: views = its outputs on `views` augmented copies of the training set, computed once per study and cached (Fast Knowledge Distillation; each epoch a sample is one of its views; crop_padding and flip must then be fixed); live = the teacher runs on every batch (any augmentation, one teacher forward per step)"""
    views: fixed_only("int", ge=1, le=64) = 8
    """augmented copies of the training set whose teacher outputs are cached (teacher: views)"""
    mixup: tunable("float", ge=0, le=10) = 0.0
    """MixUp: Beta(a, a) mixing of image pairs and their labels; 0 = off (needs teacher: live)"""
    cutmix: tunable("float", ge=0, le=10) = 0.0
    """CutMix: a Beta(a, a)-sized box pasted from another image; 0 = off (with mixup, each batch uses one of the two; needs teacher: live)"""

    @property
    def active(self) -> bool:
        """Whether augmentation may happen (a searched setting counts)."""
        return self.crops or self.mixes

    @property
    def crops(self) -> bool:
        """Whether random crop or flip may happen (a searched setting counts)."""
        return _may_be_on(self.crop_padding) or _may_be_on(self.flip)

    @property
    def mixes(self) -> bool:
        """Whether MixUp or CutMix may happen (a searched setting counts)."""
        return _may_be_on(self.mixup) or _may_be_on(self.cutmix)


PRUNE_IMPORTANCES = ("l1", "l2", "fpgm", "taylor", "bn_scale", "random")
PRUNE_BACKENDS = ("torch_pruning", "nni")
NNI_IMPORTANCES = ("l1", "l2", "fpgm", "taylor")
QUANTIZE = ("none", "ptq", "qat")
QUANT_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


class CompressConfig(_Section):
    """Structural pruning (channels really removed, with Torch-Pruning) and INT8 quantization
    of the student, inside the trial: its accuracy and costs are those of the compressed model."""

    prune_rate: tunable("float", ge=0, le=0.9) = 0.0
    """share of the output channels removed from each prunable layer (0 = no pruning); the classifier's outputs are kept"""
    prune_stage_rates: list[tunable("float", ge=0, le=0.9)] | None = None
    """per-stage rates (one per student stage) that replace prune_rate inside each stage; the stem follows prune_rate"""
    prune_global: tunable("bool") = False
    """rank channels across all layers at once (layers lose different shares) instead of prune_rate in every layer"""
    importance: tunable("str", choices=PRUNE_IMPORTANCES) = "l1"
    """how channels are ranked: l1 / l2 weight norm, fpgm (geometric median), taylor (weight x gradient on a few training batches), bn_scale (BatchNorm gamma), random"""
    prune_at: tunable("float", ge=0, lt=1) = 0.3
    """share of the epochs trained before the first pruning step (0 = prune at initialisation); the remaining epochs fine-tune with the trial's losses"""
    prune_steps: tunable("int", ge=1, le=50) = 1
    """prune in this many steps, one per epoch, each removing an equal share; the schedule is moved earlier if needed so that at least one epoch fine-tunes after the last step"""
    round_to: tunable("int", ge=1, le=64) = 1
    """keep a multiple of this many channels in each pruned layer (e.g. 8: CPU kernels are vectorised over channel blocks, and odd counts can be slower than the unpruned layer)"""
    prune_backend: tunable("str", choices=PRUNE_BACKENDS) = "torch_pruning"
    """who chooses the channels: torch_pruning, or nni (pip install 'autodistill[nni]': NNI 3.0's pruners pick, Torch-Pruning removes)"""
    quantize: tunable("str", choices=QUANTIZE) = "none"
    """INT8: ptq (post-training static quantization, calibrated on training batches) or qat (quantization-aware training from qat_start on); accuracy, size and latency are the int8 model's"""
    qat_start: tunable("float", ge=0, lt=1) = 0.5
    """qat only: share of the epochs trained in float before fake quantization starts (never before pruning is done)"""
    calibration_batches: fixed_only("int", ge=1, le=1000) = 8
    """training batches (of train.batch_size) that calibrate the activation ranges (ptq)"""
    engine: fixed_only("str", choices=QUANT_ENGINES) = "x86"
    """int8 kernels: x86 (fbgemm + onednn, the default on x86 CPUs), fbgemm, onednn, or qnnpack (ARM phones)"""

    @model_validator(mode="after")
    def _check(self) -> "CompressConfig":
        if self.prune_stage_rates is not None and not self.prune_stage_rates:
            raise ValueError("prune_stage_rates: give one rate per stage, or leave it out")
        if self.prune_backend == "nni" and isinstance(self.importance, str) and self.importance not in NNI_IMPORTANCES:
            raise ValueError(f"importance {self.importance!r} is not available with prune_backend nni; use l1, l2, fpgm or taylor")
        if self.prune_backend == "nni" and self.prune_global is True:
            raise ValueError("prune_global is not available with prune_backend nni (NNI prunes each layer by its rate here)")
        return self

    @property
    def prunes(self) -> bool:
        """True when this (resolved) config removes channels."""
        rates = [self.prune_rate, *(self.prune_stage_rates or [])]
        return any(is_distribution(r) or r > 0 for r in rates)

    @property
    def active(self) -> bool:
        """True when this (resolved) config prunes or quantizes."""
        return self.prunes or self.quantize != "none"


class SearchResources(_Section):
    cpu: float = Field(1.0, gt=0)
    """CPUs per trial (also its torch threads)"""
    gpu: float = Field(0.0, ge=0)
    """GPUs per trial; fractions share a GPU"""


PRUNERS = ("none", "pareto", "asha", "median", "percentile", "successive_halving", "hyperband", "wilcoxon")
SINGLE_OBJECTIVE_PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "wilcoxon")


class EarlyStoppingConfig(_Section):
    grace_period: int = Field(2, ge=1)
    """epochs every trial trains before it can be stopped (the first rung)"""
    reduction_factor: float = Field(3.0, gt=1)
    """eta: rungs at grace_period x eta^k epochs, and the best 1/eta of the trials at a rung go on"""
    min_trials_per_rung: int = Field(3, ge=1)
    """a rung stops nobody until this many trials reached it (pareto); Optuna pruners: trials before pruning starts"""
    percentile: float = Field(25.0, gt=0, lt=100)
    """percentile pruner: stop a trial below this percentile of the others at the same epoch"""


class SearchConfig(_Section):
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    """tpe (multivariate, constant liar), nsga2, gp (Gaussian process), or random; all seeded, all but random use the constraints"""
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    """configurations tried first, e.g. [{distill.alpha: 0.9, distill.temperature.start: 4.0}]: keys are dimension names (see autodistill validate), unlisted dimensions are sampled"""
    trials: int = Field(20, ge=1)
    """number of finished trials the study aims for"""
    time_budget_s: float | None = Field(None, gt=0)
    """stop starting trials after this many seconds (running ones are stopped too)"""
    epoch_budget: int | None = Field(None, ge=1)
    """stop the search after this many student-epochs, summed over all trials (stopped ones included; running ones are stopped too): equal compute for searches that stop trials early and those that do not"""
    max_concurrent: int = Field(2, ge=1)
    """trials running at once (each takes resources.cpu CPUs)"""
    seed: int = 0
    """seed of the sampler; trial n trains with seed + n"""
    pruner: Literal[PRUNERS] = "none"  # type: ignore[valid-type]
    """early stopping: none; pareto (multi-objective successive halving: a trial is compared with those that cost as little); asha (accuracy only); or an Optuna pruner for single-objective studies: median, percentile, successive_halving, hyperband, wilcoxon"""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """rungs of pareto / asha and the settings of the Optuna pruners"""
    report_interval_s: float = Field(1.0, ge=0)
    """with pruner none and no epoch_budget (nothing decides on intermediate results), a trial reports to the driver at most this often, each report carrying every epoch since the last (the curves stay complete); 0 = every epoch (one TensorBoard point per epoch). Each report costs the trial a round trip through the driver (~25 ms)"""
    max_failures: int = Field(1, ge=0)
    """times Ray restarts a trial whose worker process died (killed, out of memory, node lost); the restart continues from its last epoch. A trial that raises or diverges is not retried"""
    resources: SearchResources = SearchResources()
    """per trial"""


LATENCY_BACKENDS = ("torch", "torchscript", "onnxruntime")


class LatencyConfig(_Section):
    device: Literal["cpu", "cuda"] = "cpu"
    """where latency is measured (cuda: CUDA events after synchronisation)"""
    backend: Literal[LATENCY_BACKENDS] = "torch"  # type: ignore[valid-type]
    """what runs the timed model: torch (eager), torchscript (traced and frozen) or onnxruntime (the exported ONNX file, CPU); pick the one you deploy with"""
    batch_size: int = Field(1, ge=1)
    """images per timed forward pass"""
    threads: int = Field(1, ge=1)
    """torch intra-op threads while timing (1 = a phone / a shared server core)"""
    warmup: int = Field(10, ge=0)
    """untimed runs before timing"""
    repeats: int = Field(30, ge=1)
    """timed runs in a trial; the median is reported"""
    final_repeats: int = Field(200, ge=1)
    """timed runs when the front is re-measured alone at the end of the study"""


class ExecutionConfig(_Section):
    address: str | None = None
    """Ray cluster address (auto, ray://host:port); None starts a local Ray"""
    storage: str | None = None
    """SQLAlchemy URL of the Optuna storage; default sqlite:///<results>/<name>/study.db"""
    results: str = "results"
    """directory under which the study's folder <name> is created"""
    teacher_cache_gb: float = Field(2.0, ge=0)
    """largest cache of the primary teacher's stage outputs (float16, the training set) for feature and attention losses, shared with trials through the Ray object store; bigger -> the teacher runs on every batch instead; 0 = never cache"""
    ray_storage: str | None = None
    """where Ray Tune keeps its experiment and trial checkpoints (its storage_path): a folder every node can write (NFS) or a URI (s3://..., gs://...); default <results>/<name>, right for one machine or a shared filesystem"""


class Bound(_Section):
    min: float | None = None
    """the metric must be at least this"""
    max: float | None = None
    """the metric must be at most this"""

    @model_validator(mode="after")
    def _check(self) -> "Bound":
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


COST_METRICS = ("params", "macs", "size_mb", "latency_ms")


class StudyConfig(_Section):
    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    """the study's folder under execution.results and its Optuna study name"""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    teachers: list[TeacherConfig] | None = None
    """several teachers whose soft targets are averaged with their weights; the first also gives the features and attention (set this or teacher, not both)"""
    student: StudentConfig = Field(default_factory=StudentConfig)  # type: ignore[valid-type]
    distill: DistillConfig = DistillConfig()
    compress: CompressConfig = CompressConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    objectives: dict[str, Literal["max", "min"]] = Field(
        default_factory=lambda: {"accuracy": "max", "params": "min", "latency_ms": "min"}
    )
    """metric -> direction; metrics: accuracy, params, macs, size_mb, latency_ms"""
    constraints: dict[str, Bound] = Field(default_factory=dict)
    """metric -> {min, max}, e.g. {latency_ms: {max: 2.0}, accuracy: {min: 0.9}}: the samplers steer away from violations, the front holds feasible trials only, and a student whose cost alone breaks a constraint is not trained"""
    search: SearchConfig = SearchConfig()
    latency: LatencyConfig = LatencyConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, constraints: dict[str, Bound]) -> dict[str, Bound]:
        for metric in constraints:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        return constraints

    @field_validator("objectives")
    @classmethod
    def _check_objectives(cls, objectives: dict[str, str]) -> dict[str, str]:
        if not objectives:
            raise ValueError("at least one objective is needed, e.g. {accuracy: max}")
        for metric in objectives:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        return objectives

    @model_validator(mode="after")
    def _one_teacher_section(self) -> "StudyConfig":
        if self.teachers is not None:
            if not self.teachers:
                raise ValueError("teachers: expected a non-empty list of teachers ({arch: ..., weight: ...})")
            if "teacher" in self.model_fields_set and self.teacher != self.teachers[0]:
                raise ValueError("set teacher or teachers, not both (teachers[0] is the primary teacher)")
            self.teacher = self.teachers[0]
        return self

    @property
    def all_teachers(self) -> list[TeacherConfig]:
        return list(self.teachers) if self.teachers else [self.teacher]

    @model_validator(mode="after")
    def _check_compress(self) -> "StudyConfig":
        augment = self.augment
        if augment.mixes and augment.teacher == "views" and (_may_be_on(self.distill.alpha) or _may_be_on(self.distill.alpha_end)):
            raise ValueError("augment: mixup and cutmix make images no cached view holds, so the teacher must see each batch: set augment.teacher: live")
        distill = self.distill
        if distill.needs_teacher_features:
            if any(isinstance(t.arch, str) for t in self.all_teachers[:1]):
                raise ValueError("distill: feature and attention losses need the teacher's stage outputs, which torchvision teachers do not give here; "
                                 "use a teacher from the student families")
            if compress_may_be_active(self.compress):
                raise ValueError("distill: feature and attention losses cannot be combined with compress (pruning and int8 change the matched layers)")
        teacher_arch = self.teacher.arch
        if "matrix" in _choices(distill.attention_type) and (isinstance(teacher_arch, str) or teacher_arch["family"] != "vit"):
            raise ValueError("distill.attention_type: matrix matches self-attention matrices, so the teacher must be a vit")
        for stages in _choices(distill.feature_stages):
            parse_stages(stages, None)
        if augment.teacher == "views" and (_has_distribution(augment.crop_padding) or _has_distribution(augment.flip)):
            raise ValueError("augment: with teacher: views the teacher's outputs are cached once per study, so crop_padding and flip "
                             "must be fixed; search them with teacher: live")
        compress = self.compress
        if any(q != "none" for q in _choices(compress.quantize)) and self.latency.device == "cuda":
            raise ValueError("compress.quantize: int8 models run on the CPU only; use latency.device: cpu")
        if self.latency.backend == "onnxruntime" and self.latency.device == "cuda":
            raise ValueError("latency.backend: onnxruntime measures on the CPU here; use latency.device: cpu or another backend")
        stage_rates = compress.prune_stage_rates
        if stage_rates is not None:
            for family in _choices(self.student.family):
                dims = getattr(self.student, family)
                if not hasattr(dims, "widths"):
                    raise ValueError(f"compress.prune_stage_rates: student.{family} has no stages of channels to prune")
                stages = len(dims.widths)
                if stages != len(stage_rates):
                    raise ValueError(f"compress.prune_stage_rates has {len(stage_rates)} rates but student.{family} has {stages} stages")
        pruner = self.search.pruner
        if pruner in SINGLE_OBJECTIVE_PRUNERS and list(self.objectives) != ["accuracy"]:
            raise ValueError(
                f"search.pruner: {pruner} is an Optuna pruner, which needs objectives to be accuracy alone "
                f"(Optuna cannot report intermediate values in multi-objective studies); got {', '.join(self.objectives)}: use pareto"
            )
        if pruner in ("pareto", "asha") and "accuracy" not in self.objectives:
            raise ValueError(f"search.pruner: {pruner} ranks trials by accuracy at each rung, so objectives must include accuracy")
        steps, epochs = compress.prune_steps, self.train.epochs
        if compress.prunes and isinstance(steps, int) and isinstance(epochs, int) and steps >= epochs:
            raise ValueError(f"compress.prune_steps ({steps}) needs at least {steps + 1} train.epochs (one fine-tunes after the last step), got {epochs}")
        return self

    @property
    def results_dir(self) -> Path:
        return Path(self.execution.results) / self.name


def parse_stages(text: str, num_stages: int | None) -> list[int]:
    """``distill.feature_stages`` as stage indices (0-based) of a network with ``num_stages``
    stages: 'last', 'all', or comma-separated indices (negative from the end). With
    ``num_stages`` None only the syntax is checked."""
    text = text.strip()
    if text in ("last", "all"):
        if num_stages is None:
            return []
        return [num_stages - 1] if text == "last" else list(range(num_stages))
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"distill.feature_stages: expected last, all or indices like '1,2', got {text!r}") from None
    if num_stages is None:
        return indices
    out = []
    for i in indices:
        if not -num_stages <= i < num_stages:
            raise ValueError(f"distill.feature_stages: stage {i} does not exist in a network of {num_stages} stages")
        out.append(i % num_stages)
    return sorted(set(out))


def compress_may_be_active(compress: "CompressConfig") -> bool:
    return compress.prunes or any(q != "none" for q in _choices(compress.quantize))


def _may_be_on(value: Any) -> bool:
    """Whether a fixed, chosen or ranged field may take a value other than 0 / False / None."""
    from ._tunable import Choice

    if isinstance(value, Choice):
        return any(v not in (0, False, None) for v in value.choice)
    if is_distribution(value):
        return value.high > 0
    return value not in (0, False, None)


def _choices(value: Any) -> tuple:
    """The values a fixed-or-choice field can take."""
    return value.choice if is_distribution(value) else (value,)


def _has_distribution(model: Any) -> bool:
    if is_distribution(model):
        return True
    if isinstance(model, BaseModel):
        return any(_has_distribution(getattr(model, f)) for f in type(model).model_fields)
    if isinstance(model, (list, tuple)):
        return any(_has_distribution(v) for v in model)
    if isinstance(model, dict):
        return any(_has_distribution(v) for v in model.values())
    return False


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed at ``loc`` (the parent of an unknown key), for the error message."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return list(model.model_fields)


def _one_line(err: ValidationError, model: type[BaseModel]) -> str:
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    path = format_loc(loc) or "<top level>"
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc[:-1])
        hint = f"; valid keys: {', '.join(valid)}" if valid else ""
        msg = f"{path}: unknown key{hint}"
    else:
        text = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = first.get("input")
        shown = "" if isinstance(value, (dict, list)) or str(value) in text else f" (got {value!r})"
        msg = f"{path}: {text}{shown}" if loc else text  # a whole-study check names its fields itself
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return msg


def parse_config(raw: Any, source: str = "config") -> StudyConfig:
    """Validate a dict (as read from YAML) into a :class:`StudyConfig` or raise :class:`ConfigError`."""
    if raw is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_one_line(err, StudyConfig)}") from None


def check_paths(config: StudyConfig, source: str = "config") -> StudyConfig:
    """What a study needs on the driver is there: ``teacher.checkpoint`` and ``data.root``
    (unless torchvision may download into it) exist, and NNI is installed when
    ``compress.prune_backend`` may be nni. Raises :class:`ConfigError` in one line."""
    if "nni" in _choices(config.compress.prune_backend):
        from .compress.prune import NNI_MISSING, nni_available  # compress builds on this module

        if not nni_available():
            raise ConfigError(f"{source}: {NNI_MISSING}")
    ckpt = config.teacher.checkpoint
    if ckpt is not None:
        if not Path(ckpt).exists():
            raise ConfigError(f"{source}: teacher.checkpoint: file not found: {ckpt}")
        if not Path(ckpt).is_file():
            raise ConfigError(f"{source}: teacher.checkpoint: not a file: {ckpt}")
    root = config.data.root
    if root is not None and config.data.dataset != "digits" and not config.data.download:
        if not Path(os.path.expanduser(root)).is_dir():
            raise ConfigError(f"{source}: data.root: directory not found: {root}")
    return config


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study file. ``overrides`` are dotted keys set before validation,
    e.g. ``{"search.trials": 8}`` (what the CLI flags do)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: file not found")
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if overrides and isinstance(raw, dict):
        for key, value in overrides.items():
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    config = check_paths(parse_config(raw, str(path)), str(path))
    from .space import check_points  # space builds on this module

    check_points(config, str(path))
    return config


def dump_config(config: StudyConfig) -> str:
    """The resolved config as YAML (distributions written back in their YAML form)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
