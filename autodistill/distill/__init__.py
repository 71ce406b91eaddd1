"""Distillation: losses, schedules, the fused loss of a trial and its training loop."""

from .losses import kd_per_sample
from .recipe import DistillLoss
from .schedules import kd_weight_at, lr_factor, ramp, temperature_at
from .train import EpochStats, evaluate, predict_logits, train

__all__ = ["DistillLoss", "EpochStats", "kd_per_sample", "evaluate", "kd_weight_at", "lr_factor", "predict_logits", "ramp", "temperature_at", "train"]
