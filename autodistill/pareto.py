"""Non-dominated sorting and hypervolume (pure functions; every objective minimised).

Callers turn maximised objectives into minimised ones first (accuracy -> error = 1 - accuracy,
see :func:`as_minimization`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n, d) values with directions ``max``/``min`` -> values to minimise (negate the max ones)."""
    values = np.asarray(values, dtype=float)
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return values * signs


def non_dominated_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates. Duplicates are all kept."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        others = points[np.arange(n) != i]
        if len(others) and np.any(np.all(others <= points[i], axis=1) & np.any(others < points[i], axis=1)):
            mask[i] = False
    return mask


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Rank of each point: 0 for the front, 1 for the front once it is removed, ..."""
    points = np.asarray(points, dtype=float)
    ranks = np.full(len(points), -1)
    remaining = np.arange(len(points))
    rank = 0
    while len(remaining):
        mask = non_dominated_mask(points[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact, by slicing along
    the last objective; fine for the fronts of a study, tens of points in 2-5 dimensions).
    Points that do not strictly dominate the reference add nothing."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return _hv(pts[non_dominated_mask(pts)], ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            volume += depth * _hv(pts[: i + 1, :-1], ref[:-1])
    return volume


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
