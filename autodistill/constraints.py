"""Constraints of a study (``constraints:``), e.g. ``{latency_ms: {max: 2.0}, accuracy: {min: 0.9}}``.

- The samplers (TPE, NSGA-II, GP) read each finished trial's constraint values, which the
  searcher stores with ``Trial.set_constraint`` (:func:`constraint_values`; Optuna 5
  deprecates the samplers' ``constraints_func``): one value per bound, feasible when <= 0,
  computed from the trial's metrics.
- A bound on a cost (params, MACs, size, latency) is checked before training when the
  network's costs are final then (no pruning or quantization ahead): a student that breaks
  one is recorded as PRUNED (``infeasible``) without being trained. A compressed student's
  costs are known only at the end; its bounds are checked then, like accuracy's.
- Only feasible completed trials make the Pareto front and the hypervolume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .config import COST_METRICS, Bound


def constraint_values(constraints: dict[str, Bound], metrics: dict[str, Any]) -> dict[str, float]:
    """Optuna's constraint values of a trial's metrics, by bound (``params.max``,
    ``accuracy.min``, ...): > 0 by how much the bound is broken, <= 0 when it holds; a
    missing or non-finite metric breaks it (1e9)."""
    out = {}
    for metric in sorted(constraints):
        bound, value = constraints[metric], metrics.get(metric)
        value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan
        for side, limit, sign in (("max", bound.max, 1.0), ("min", bound.min, -1.0)):
            if limit is not None:
                out[f"{metric}.{side}"] = 1e9 if math.isnan(value) else sign * (value - limit)
    return out


def violations(constraints: dict[str, Bound], metrics: dict[str, Any]) -> str:
    """The bounds ``metrics`` break, in words (``""`` when all hold), e.g.
    ``params 60,000 > max 50,000``."""
    parts = []
    for metric in sorted(constraints):
        bound, value = constraints[metric], metrics.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        shown = f"{value:,.0f}" if metric in ("params", "macs") else f"{value:.4g}"
        if bound.max is not None and value > bound.max:
            parts.append(f"{metric} {shown} > max {bound.max:g}")
        if bound.min is not None and value < bound.min:
            parts.append(f"{metric} {shown} < min {bound.min:g}")
    return ", ".join(parts)


def cost_bounds(constraints: dict[str, Bound]) -> dict[str, Bound]:
    """The bounds on costs, which can be checked before training."""
    return {m: b for m, b in constraints.items() if m in COST_METRICS}


def feasible(frame: pd.DataFrame, constraints: dict[str, Bound]) -> np.ndarray:
    """Boolean mask of the rows (trials) whose metrics meet every bound."""
    if not constraints or frame.empty:
        return np.ones(len(frame), dtype=bool)
    return np.array([max(constraint_values(constraints, row.to_dict()).values(), default=0.0) <= 0 for _, row in frame.iterrows()], dtype=bool)
