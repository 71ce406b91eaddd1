"""Flash distillation before the search (``search.prescreen``): rank many students cheaply and
try the promising ones first.

``candidates`` students are sampled at random from the study's space (seeded by
``search.seed``) and each is trained for ``epochs`` epochs with its own recipe, cut short
(as Google's AutoDistill scores students after a few hundred steps of distillation). They are
ranked by non-dominated sorting over (the quality metric after those epochs, the study's cost
objectives as they are before training: params, MACs, size, and latency when it is an
objective); the best ``keep`` of them, taking whole fronts, then the most accurate of the last
front, are enqueued as the search's first trials, in rank order, so that the sampler starts
from them instead of from random students.

Its student-epochs count towards ``search.epoch_budget`` (the study's ``prescreen_epochs``
attribute, read by :func:`~autodistill.tune.searcher.epochs_spent`); what it measured is in
``prescreen.json``. It runs once per study: a resumed study has the attribute and skips it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..config import StudyConfig
from ..pareto import as_minimization, non_dominated_ranks
from ..space import Dimension, resolve, sample
from ..tasks import Task

PRESCREEN_JSON = "prescreen.json"
EPOCHS_ATTR = "prescreen_epochs"


def candidates(config: StudyConfig, space: list[Dimension], n: int) -> list[dict[str, Any]]:
    """``n`` distinct students sampled at random from ``space`` (seeded by search.seed);
    fewer when the space holds fewer."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.search.seed + 7919))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(n * 20):
        if len(out) == n:
            break
        params = sample(study.ask(), space)
        key = repr(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


def select(rows: list[dict[str, Any]], objectives: dict[str, str], quality: str, keep: int) -> list[int]:
    """Indices of the ``keep`` best rows, in order: whole non-dominated fronts over the
    objectives (``quality`` taken after the flash epochs), the last one cut by quality."""
    usable = [
        i for i, r in enumerate(rows) if r.get("fail_reason") is None and all(isinstance(r.get(m), (int, float)) and math.isfinite(r[m]) for m in objectives)
    ]
    if not usable:
        return []
    names = list(objectives)
    values = as_minimization(np.array([[float(rows[i][m]) for m in names] for i in usable]), [objectives[m] for m in names])
    ranks = non_dominated_ranks(values)
    q = names.index(quality)
    order = sorted(range(len(usable)), key=lambda j: (ranks[j], values[j][q]))  # minimised: best quality first
    return [usable[j] for j in order[:keep]]


def run_prescreen(
    config: StudyConfig, task: Task, data: Any, targets: Any, space: list[Dimension], study, results_dir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train the candidates briefly, enqueue the best, record the epochs spent; returns what
    ``prescreen.json`` holds."""
    from .trainable import _broken_before_training

    pre = config.search.prescreen
    wants_latency = any(m in task.latency_metrics for m in config.objectives)
    pool = candidates(config, space, pre.candidates)
    log(f"pre-screen: {len(pool)} candidate students, {pre.epochs} epoch(s) of flash distillation each; the best {pre.keep} start the search")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    epochs = 0
    for i, params in enumerate(pool):
        trial_cfg = resolve(config, params)
        trial_cfg = trial_cfg.model_copy(update={"train": trial_cfg.train.model_copy(update={"epochs": pre.epochs})})
        row: dict[str, Any] = {"point": params, "fail_reason": None}
        try:
            run = task.start_trial(trial_cfg, config, data, targets, config.search.seed + 100_000 + i)
            base = dict(run.costs())
            broken = _broken_before_training(config, task, run, base)
            row.update(base)
            if broken:
                row["fail_reason"] = f"infeasible before training: {broken}"
            else:
                if wants_latency:
                    row.update(run.latency())
                history = run.train(lambda stats: None, None, None)
                epochs += len(history)
                row[task.quality] = float(history[-1].as_dict()[task.quality])
                row["flash_epochs"] = len(history)
        except Exception as err:  # a candidate that cannot train is left out, as a trial would fail
            row["fail_reason"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        rows.append(row)
        shown = f"{task.quality} {row[task.quality]:.4f}" if task.quality in row else row["fail_reason"]
        log(f"  pre-screen [{i + 1}/{len(pool)}]: {shown}")
    # ranked by the quality and the objectives every trained candidate has a figure of before
    # training (its task's costs, latency); not by a metric only a finished trial has
    trained = [r for r in rows if r["fail_reason"] is None]
    objectives = {m: d for m, d in config.objectives.items() if m != task.quality and trained and all(m in r for r in trained)}
    objectives = {task.quality: task.quality_mode, **objectives}
    chosen = select(rows, objectives, task.quality, pre.keep)
    for i in chosen:
        study.enqueue_trial(rows[i]["point"], skip_if_exists=True)
    record = {
        "candidates": len(pool),
        "epochs_each": pre.epochs,
        "student_epochs": epochs,
        "ranked_by": objectives,
        "chosen": chosen,
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    _io.write_json(results_dir / PRESCREEN_JSON, record)
    study.set_user_attr(EPOCHS_ATTR, epochs)  # last: a study interrupted before it runs the pre-screen again
    log(f"pre-screen: {len(chosen)} students enqueued, {epochs} student-epochs in {record['wall_s']:.0f} s")
    return record
