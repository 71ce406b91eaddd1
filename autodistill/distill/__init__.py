"""Distillation: losses, schedules, the fused loss of a trial and its training loop."""

from .losses import KDLoss
from .recipe import DistillLoss
from .schedules import kd_weight_at, lr_factor, ramp, temperature_at
from .train import EpochStats, evaluate, predict_logits, train

__all__ = ["DistillLoss", "EpochStats", "KDLoss", "evaluate", "kd_weight_at", "lr_factor", "predict_logits", "ramp", "temperature_at", "train"]
