"""Schedules over training progress p in [0, 1] (0 = first step, 1 = last)."""

from __future__ import annotations

import math

import torch

from ..config import DistillConfig, TemperatureConfig


def ramp(schedule: str, start: float, end: float, progress: float, sharpness: float = 10.0, steps: int = 2) -> float:
    """A value going from ``start`` (p = 0) to ``end`` (p = 1):

    - constant: start
    - linear:   start + (end - start) * p
    - cosine:   end + (start - end) * (1 + cos(pi p)) / 2
    - step:     ``steps`` equal plateaus from start to end (e.g. 4 -> 2.5 -> 1 for steps=3)
    - sigmoid:  start + (end - start) * (s(p) - s(0)) / (s(1) - s(0)), s(p) = 1 / (1 + exp(-k (p - 1/2)))
                with k = ``sharpness``: flat at both ends, the switch at mid-training
    """
    try:
        value = RAMPS[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(RAMPS)}") from None
    return value(start, end, min(max(progress, 0.0), 1.0), sharpness, steps)


def _step(start: float, end: float, p: float, sharpness: float, steps: int) -> float:
    plateau = min(int(p * steps), steps - 1)
    return start + (end - start) * plateau / (steps - 1)


def _sigmoid(start: float, end: float, p: float, sharpness: float, steps: int) -> float:
    s = lambda q: 1 / (1 + math.exp(-sharpness * (q - 0.5)))  # noqa: E731
    return start + (end - start) * (s(p) - s(0)) / (s(1) - s(0))


RAMPS = {
    "constant": lambda start, end, p, sharpness, steps: start,
    "linear": lambda start, end, p, sharpness, steps: start + (end - start) * p,
    "cosine": lambda start, end, p, sharpness, steps: end + (start - end) * (1 + math.cos(math.pi * p)) / 2,
    "step": _step,
    "sigmoid": _sigmoid,
}
"""schedule -> its value at progress p in [0, 1] (formulas in :func:`ramp`)"""


def temperature_at(cfg: TemperatureConfig, progress: float, entropy: float | None = None) -> float:
    """Temperature at ``progress`` by :func:`ramp`; the ``adaptive`` schedule reads the
    teacher's mean normalised entropy h in [0, 1] on the batch instead::

        T = end + (start - end) * (1 - h)

    a confident teacher (h near 0) is softened by the high temperature ``start``; an unsure one
    (h near 1), already soft, gets ``end``."""
    if cfg.schedule == "adaptive":
        if entropy is None:
            raise ValueError("the adaptive temperature needs the teacher's entropy on the batch")
        h = entropy.clamp(0.0, 1.0) if isinstance(entropy, torch.Tensor) else min(max(entropy, 0.0), 1.0)
        return cfg.end + (cfg.start - cfg.end) * (1 - h)  # a tensor stays on its device: no sync per step
    return ramp(cfg.schedule, cfg.start, cfg.end, progress, cfg.sharpness, cfg.steps)


def kd_weight_at(cfg: DistillConfig, progress: float) -> float:
    """The KD weight: ``alpha``, or ``alpha`` -> ``alpha_end`` by ``alpha_schedule``."""
    if cfg.alpha_end is None:
        return cfg.alpha
    return ramp(cfg.alpha_schedule, cfg.alpha, cfg.alpha_end, progress)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
