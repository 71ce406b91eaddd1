"""A start-up design spread over the cost (``search.startup: spread`` or ``spread_students``):
the sampler's first trials chosen to cover the space's range of costs, instead of drawn at random.

TPE and GP model the results only after their start-up trials (4 to 10, see
:func:`~autodistill.tune.runner.startup_trials`); before that they sample at random, and a
random draw of eight students from a space of a hundred architectures tends to miss its
cheapest ones, where most of a front's hypervolume lies. Here many students are drawn at random
(seeded by ``search.seed``), their costs computed without training (the task's
``TrialRun.costs``, once per architecture), and for each of ``k`` costs evenly spaced on a log
scale from the cheapest drawn architecture to the dearest, the drawn architecture nearest to
it is taken. With ``spread`` their recipes (every other dimension: loss weights, temperature,
learning rate) lie on a Latin hypercube, so that the start-up trials also cover each recipe
dimension's range (a random draw may give every small student a learning rate too low for it);
with ``spread_students`` every one of them has the same recipe, each dimension at the middle of
its range (:func:`middle_recipe`), so that their results differ by the student alone and the
sampler's first model of the front is not blurred by bad recipes. They are
enqueued in an anytime order: the cheapest, the dearest, then each time the one farthest
(in log cost) from those before, so that a study stopped early has still spread its trials
over the range. The cost is
the study's first cost objective that is known before training (params, MACs, size); with
latency as the only cost, MACs stand in for it (measuring a hundred latencies would cost
more than it tells). A student that breaks a cost constraint known before training is not
drawn.

It trains nothing and runs once per study: the study's ``startup_design`` attribute records
what was chosen, and a resumed study that has it does not draw again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._tunable import Choice, Distribution, IntRange
from ..config import StudyConfig
from ..space import Dimension, resolve, sample
from ..tasks import Task

DESIGN_ATTR = "startup_design"
ARCHITECTURE = ("student.", "compress.")
"""the dimensions that decide a student's costs; the others are its recipe"""
DRAWN_PER_TRIAL = 32
"""students drawn for each start-up trial to choose"""


def architecture_key(params: dict[str, Any]) -> str:
    """What a student's costs depend on: its searched student.* and compress.* values."""
    return json.dumps(sorted((k, v) for k, v in params.items() if k.startswith(ARCHITECTURE)), default=str)


def cost_metric(objectives: dict[str, str], costs: dict[str, float]) -> str:
    """The cost that the design spreads: the first objective the costs hold, else MACs (the
    stand-in for latency), else params, else the first cost there is."""
    for name in objectives:
        if name in costs:
            return name
    for name in ("macs", "params"):
        if name in costs:
            return name
    return next(iter(costs))


def spread(costs: list[float], k: int) -> list[int]:
    """Indices of up to ``k`` distinct entries of ``costs`` (positive) that cover their range
    evenly on a log scale: for each of ``k`` targets from the least to the greatest, the
    unused entry nearest to it (the earlier one on a tie); in :func:`anytime_order`."""
    if not costs or k <= 0:
        return []
    logs = np.log(np.maximum(np.asarray(costs, dtype=float), 1e-12))
    lo, hi = float(logs.min()), float(logs.max())
    targets = [lo] if k == 1 else list(np.linspace(lo, hi, k))
    free = np.ones(len(costs), dtype=bool)
    chosen: list[int] = []
    for t in targets:
        if not free.any():
            break
        gap = np.where(free, np.abs(logs - t), np.inf)
        i = int(np.argmin(gap))  # argmin takes the first of equal gaps
        free[i] = False
        chosen.append(i)
    return anytime_order(chosen, logs)


def anytime_order(chosen: list[int], logs: np.ndarray) -> list[int]:
    """``chosen`` in the order that keeps the ones run so far spread: the cheapest, then each
    time the one farthest (in log cost) from all taken before it (the dearest second, the
    middle third...), so that a study stopped after any number of them has tried the whole
    range of costs rather than its cheap end."""
    rest = sorted(chosen, key=lambda i: (logs[i], i))
    order = [rest.pop(0)] if rest else []
    while rest:
        far = max(range(len(rest)), key=lambda j: (min(abs(logs[rest[j]] - logs[i]) for i in order), -j))
        order.append(rest.pop(far))
    return order


def _quantile(dist: Distribution, q: float) -> Any:
    """The value at quantile ``q`` (0-1) of a distribution taken as uniform (on a log scale
    when it is ``log``), on its step grid; a choice's ``q``-th of its options."""
    if isinstance(dist, Choice):
        return dist.choice[min(int(q * len(dist.choice)), len(dist.choice) - 1)]
    lo, hi = float(dist.low), float(dist.high)
    value = math.exp(math.log(lo) + q * (math.log(hi) - math.log(lo))) if dist.log else lo + q * (hi - lo)
    if dist.step:
        value = lo + round((value - lo) / dist.step) * dist.step
    value = min(max(value, lo), hi)
    return int(round(value)) if isinstance(dist, IntRange) else float(value)


def recipe_dimensions(space: list[Dimension]) -> list[Dimension]:
    """The unconditional dimensions that are not the student's or the compression's: the
    recipe (loss weights, temperature, learning rate...)."""
    return [dim for dim in space if dim.condition is None and not dim.name.startswith(ARCHITECTURE)]


def latin_recipes(space: list[Dimension], k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``k`` values of every :func:`recipe dimension <recipe_dimensions>`, on a Latin
    hypercube: each dimension's range cut into ``k`` equal strata (of probability), one value
    at random in each, the strata shuffled independently per dimension."""
    out: list[dict[str, Any]] = [{} for _ in range(k)]
    for dim in recipe_dimensions(space):
        order = rng.permutation(k)
        for j in range(k):
            out[j][dim.name] = _quantile(dim.dist, (order[j] + rng.uniform()) / k)
    return out


def middle_recipe(space: list[Dimension]) -> dict[str, Any]:
    """Every :func:`recipe dimension <recipe_dimensions>` at the middle of its range: the
    midpoint, on a log scale for a ``log`` range, on its step grid; a choice's middle option,
    of an even number the earlier of the two middle ones (of two, the first: the plain option
    that a study file lists first, as in ``mixup: {choice: [0.0, 0.2]}``, not every extra
    loss and augmentation at once)."""
    return {dim.name: _middle_option(dim.dist) if isinstance(dim.dist, Choice) else _quantile(dim.dist, 0.5) for dim in recipe_dimensions(space)}


def _middle_option(dist: Choice) -> Any:
    return dist.choice[(len(dist.choice) - 1) // 2]


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def draw(config: StudyConfig, space: list[Dimension], n: int) -> list[dict[str, Any]]:
    """``n`` points drawn at random from ``space`` (seeded by search.seed; repeats possible)."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.search.seed + 104_729))
    return [sample(study.ask(), space) for _ in range(n)]


def run_spread(config: StudyConfig, task: Task, data: Any, targets: Any, space: list[Dimension], study, k: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Enqueue ``k`` start-up trials spread over the cost; returns what the study's
    ``startup_design`` attribute records."""
    from .trainable import _broken_before_training

    started = time.perf_counter()
    points = draw(config, space, k * DRAWN_PER_TRIAL)
    by_arch: dict[str, tuple[dict[str, Any], dict[str, float] | None]] = {}
    for i, params in enumerate(points):
        key = architecture_key(params)
        if key in by_arch:
            continue
        try:
            run = task.start_trial(resolve(config, params), config, data, targets, config.search.seed + 200_000 + i)
            costs = dict(run.costs())
            usable = not _broken_before_training(config, task, run, costs)
        except Exception:  # a student that cannot be built is not drawn; its trial would fail
            usable = False
        by_arch[key] = (params, costs if usable else None)
    drawn = [(p, c) for p, c in by_arch.values() if c]
    record: dict[str, Any] = {"drawn": len(points), "architectures": len(by_arch), "usable": len(drawn), "chosen": []}
    if drawn:
        metric = cost_metric(config.objectives, drawn[0][1])
        values = [float(c[metric]) for _, c in drawn]
        picked = spread(values, k)
        middle = config.search.startup == "spread_students"
        if middle:
            recipes = [middle_recipe(space)] * len(picked)
        else:
            recipes = latin_recipes(space, len(picked), np.random.default_rng(config.search.seed + 104_729))
        for i, recipe in zip(picked, recipes):
            point = {**drawn[i][0], **recipe}
            study.enqueue_trial(point, skip_if_exists=True)
            record["chosen"].append({"point": point, metric: values[i]})
        record["cost"] = metric
        costs = [c[metric] for c in record["chosen"]]
        first, last = _figure(min(costs)), _figure(max(costs))
        log(
            f"start-up: {len(record['chosen'])} students spread over {metric} {first} to {last} (from {len(points)} drawn, "
            f"{len(drawn)} architectures), cheapest and dearest first"
            f"{', each with the middle recipe' if middle else ''}; {time.perf_counter() - started:.1f} s"
        )
    else:
        log(f"start-up: none of {len(points)} drawn students could be built within the constraints; the sampler draws its own")
    record["wall_s"] = time.perf_counter() - started
    study.set_user_attr(DESIGN_ATTR, record)  # last: a study interrupted before this draws again
    return record
