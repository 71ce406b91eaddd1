"""``distill:`` and ``augment:``: the loss of a trial and what the images go through."""

from __future__ import annotations

from .._tunable import fixed_only, tunable
from ._base import Section, may_be_on
from ._options import (
    ATTENTION_TYPES,
    AUGMENT_TEACHER,
    BALANCE,
    FEATURE_DISTANCES,
    SAMPLE_WEIGHTING,
    TEMPERATURE_SCHEDULES,
    WEIGHT_SCHEDULES,
)


class TemperatureConfig(Section):
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


class DistillConfig(Section):
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
        return may_be_on(self.feature_weight) or may_be_on(self.attention_weight)


class AugmentConfig(Section):
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
        return may_be_on(self.crop_padding) or may_be_on(self.flip)

    @property
    def mixes(self) -> bool:
        """Whether MixUp or CutMix may happen (a searched setting counts)."""
        return may_be_on(self.mixup) or may_be_on(self.cutmix)


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
