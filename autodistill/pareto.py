"""Non-dominated sorting and hypervolume (pure functions; every objective minimised), by
`moocore <https://multi-objective.github.io/moocore/python/>`_; tests/test_pareto.py keeps
brute-force versions as cross-checks.

Callers turn maximised objectives into minimised ones first (accuracy -> error = 1 - accuracy,
see :func:`as_minimization`).
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np


def as_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n, d) values with directions ``max``/``min`` -> values to minimise (negate the max ones)."""
    values = np.asarray(values, dtype=float)
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return values * signs


def non_dominated_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates. Duplicates are all kept."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(points, keep_weakly=True), dtype=bool)


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Rank of each point: 0 for the front, 1 for the front once it is removed, ..."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(moocore.pareto_rank(points), dtype=int)


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact; moocore's
    algorithms, which stay fast past 3 objectives where slicing is exponential). Points that
    do not strictly dominate the reference add nothing."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref))


def knee_index(points: np.ndarray) -> int:
    """The knee of a front (all objectives minimised): each objective is rescaled to [0, 1]
    over the given points (0 = the best value on the front), and the knee is the point closest
    (Euclidean) to the ideal point where every objective is at its best. An objective with one
    value on the whole front does not count. Ties go to the earlier point."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        raise ValueError("the front is empty")
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = (points - low) / span
    return int(np.argmin(np.sqrt((scaled**2).sum(axis=1))))
