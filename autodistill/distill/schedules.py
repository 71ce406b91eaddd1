"""Schedules over training progress p in [0, 1] (0 = first step, 1 = last)."""

from __future__ import annotations

import math

from ..config import TemperatureConfig


def temperature_at(cfg: TemperatureConfig, progress: float) -> float:
    """Temperature at ``progress``:

    - constant: start
    - linear:   start + (end - start) * p
    - cosine:   end + (start - end) * (1 + cos(pi p)) / 2
    - step:     ``steps`` equal plateaus from start to end (e.g. 4 -> 2.5 -> 1 for steps=3)
    """
    p = min(max(progress, 0.0), 1.0)
    start, end = cfg.start, cfg.end
    if cfg.schedule == "constant":
        return start
    if cfg.schedule == "linear":
        return start + (end - start) * p
    if cfg.schedule == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * p)) / 2
    if cfg.schedule == "step":
        plateau = min(int(p * cfg.steps), cfg.steps - 1)
        return start + (end - start) * plateau / (cfg.steps - 1)
    raise ValueError(f"unknown temperature schedule {cfg.schedule!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
