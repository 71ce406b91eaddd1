"""Distillation: losses, schedules and the training loop of one trial."""

from .losses import FusedKDLoss, KDLoss
from .schedules import lr_factor, temperature_at
from .train import EpochStats, evaluate, predict_logits, train

__all__ = ["EpochStats", "FusedKDLoss", "KDLoss", "evaluate", "lr_factor", "predict_logits", "temperature_at", "train"]
