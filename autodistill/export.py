"""Export a study's chosen student and prove the files are the model that was measured.

``autodistill export results/<name> --pick knee`` picks a completed trial (:func:`pick_trial`)
and hands it to the study's task, which writes its formats and verifies each file against
the PyTorch network (for image classifiers:
:mod:`autodistill.tasks.image_classification.export`). The folder appears only once every
file passed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import layout
from ._errors import AutodistillError, DiskFull
from ._lock import StudyLock
from .loading import load_config
from .pareto import as_minimization, knee_index, non_dominated_mask
from .results import load_front, load_summary, load_trials
from .tasks import ExportResult, Task, VerificationError, get_task

__all__ = ["PICKS", "ExportResult", "VerificationError", "candidates", "export_student", "pick_trial"]

PICKS = ("knee", "quality", "accuracy", "perplexity", "params", "latency")
"""--pick rules: the knee of the front; the best quality metric of the task (accuracy for images,
perplexity for language models); the best accuracy (next-token accuracy for language models);
the lowest perplexity; the fewest parameters; the lowest latency (the task's main latency metric)"""


# --- which trial ----------------------------------------------------------------------------
def candidates(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(completed trials with their metrics, all trials, the study summary); front members
    carry their re-measured latency."""
    summary = load_summary(results_dir)
    trials = load_trials(results_dir)
    complete = trials[trials["state"] == "COMPLETE"].copy()
    front = load_front(results_dir)
    if len(front):
        indexed = front.set_index("number")
        inside = complete["number"].isin(indexed.index)
        for metric in [c[: -len("_in_trial")] for c in front.columns if c.endswith("_in_trial")]:  # the latency metrics
            complete.loc[inside, metric] = complete.loc[inside, "number"].map(indexed[metric])
        complete["latency_measured"] = np.where(inside, "alone, when the study ended", "during the search, beside other trials")
        complete["on_front"] = inside
    return complete.reset_index(drop=True), trials, summary


def pick_trial(
    complete: pd.DataFrame,
    objectives: dict[str, str],
    pick: str,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    all_trials: pd.DataFrame | None = None,
    *,
    task: Task | None = None,
    max_perplexity: float | None = None,
) -> pd.Series:
    """The trial a ``--pick`` rule selects among the completed trials that meet the limits
    (``max_latency_ms`` bounds the task's main latency metric, ``min_accuracy`` its accuracy,
    ``max_perplexity`` a language model's perplexity; ``task`` defaults to image classification).

    ``quality``: the best quality metric (ties: fewer params); ``accuracy`` / ``perplexity``:
    the best of that metric; ``params``: fewest parameters (ties: better quality); ``latency``:
    lowest latency (ties: better quality);
    ``knee``: the knee (:func:`autodistill.pareto.knee_index`) of the study's recorded front
    (``pareto.csv``, column ``on_front``) among its eligible members, or, where the limits
    leave none of them, of the Pareto front of the eligible trials; an integer: that trial.
    The rules pick among the trials that meet the study's constraints.
    """
    if pick.isdigit():
        return _numbered(complete, int(pick), all_trials)
    if pick not in PICKS:
        raise AutodistillError(f"--pick: unknown rule {pick!r}; use one of {', '.join(PICKS)} or a trial number")
    task = task or get_task("image_classification")
    metrics = _PickMetrics.of(task)
    if "feasible" in complete:  # a rule picks among the trials that meet the study's constraints
        infeasible = int((~complete["feasible"].astype(bool)).sum())
        complete = complete[complete["feasible"].astype(bool)]
        if complete.empty and infeasible:
            raise AutodistillError(
                f"none of the {infeasible} completed trial(s) meets the study's constraints (trials.csv, column feasible); --pick <number> exports one anyway"
            )
    if complete.empty:
        raise AutodistillError("the study has no completed trial to export")
    limits = {metrics.latency: ("max", max_latency_ms), metrics.accuracy: ("min", min_accuracy), "perplexity": ("max", max_perplexity)}
    if max_perplexity is not None and "perplexity" not in task.metrics:
        raise AutodistillError(f"--max-perplexity: a {task.name} study has no perplexity; its quality metric is {task.quality}")
    eligible = _within_limits(complete, {m: bound for m, bound in limits.items() if bound[1] is not None}, metrics)
    by = {
        "quality": (metrics.quality, metrics.quality_mode),
        "accuracy": (metrics.accuracy, "max"),
        "perplexity": ("perplexity", "min"),
        "params": ("params", "min"),
        "latency": (metrics.latency, "min"),
    }
    if pick in by:
        metric, mode = by[pick]
        if metric not in eligible:
            raise AutodistillError(f"--pick {pick}: a {task.name} study has no {metric}; use one of knee, quality, params, latency")
        tie, tie_mode = ("params", "min") if metric != "params" else (metrics.quality, metrics.quality_mode)
        return eligible.sort_values([metric, tie], ascending=[mode == "min", tie_mode == "min"]).iloc[0]
    names = list(objectives)
    if "on_front" in eligible and eligible["on_front"].any():
        # the recorded front: its members' latency was re-measured alone, the others' was
        # not, so a front of the mixed figures could differ from the one the study reported
        eligible = eligible[eligible["on_front"].astype(bool)]
    values = as_minimization(eligible[names].to_numpy(dtype=float), [objectives[m] for m in names])
    front = eligible[non_dominated_mask(values)].sort_values(names[0], ascending=objectives[names[0]] == "min")
    front_values = as_minimization(front[names].to_numpy(dtype=float), [objectives[m] for m in names])
    return front.iloc[knee_index(front_values)]


def _numbered(complete: pd.DataFrame, number: int, all_trials: pd.DataFrame | None) -> pd.Series:
    """``--pick <number>``: that trial, if it completed; else why it cannot be exported."""
    row = complete[complete["number"] == number]
    if len(row):
        return row.iloc[0]
    known = all_trials[all_trials["number"] == number] if all_trials is not None else pd.DataFrame()
    if len(known):
        info = known.iloc[0]
        reason = f" ({info['fail_reason']})" if isinstance(info.get("fail_reason"), str) and info["fail_reason"] else ""
        raise AutodistillError(f"--pick {number}: trial {number} is {info['state']}{reason}; only completed trials can be exported")
    raise AutodistillError(f"--pick {number}: no trial {number} in this study")


class _PickMetrics:
    """The columns the pick rules read for a task: its quality metric and direction, its
    accuracy column and its main latency metric."""

    def __init__(self, quality: str, quality_mode: str, accuracy: str, latency: str):
        self.quality, self.quality_mode, self.accuracy, self.latency = quality, quality_mode, accuracy, latency

    @classmethod
    def of(cls, task: Task) -> _PickMetrics:
        accuracy = "accuracy" if "accuracy" in task.metrics else "token_accuracy"
        return cls(task.quality, task.quality_mode, accuracy, task.latency_metrics[-1])


def _within_limits(complete: pd.DataFrame, limits: dict[str, tuple[str, float]], m: _PickMetrics) -> pd.DataFrame:
    """The completed trials within the limits ({metric: (max or min, value)}); none is an
    error that names the best and the fastest trial."""
    eligible = complete
    said = []
    for metric, (side, value) in limits.items():
        eligible = eligible[eligible[metric] <= value] if side == "max" else eligible[eligible[metric] >= value]
        said.append(f"{metric} {'<=' if side == 'max' else '>='} {value:g}")
    if eligible.empty:
        q, lat = m.quality, m.latency
        best = complete.sort_values([q, lat], ascending=[m.quality_mode == "min", True]).iloc[0]
        fastest = complete.sort_values(lat).iloc[0]
        raise AutodistillError(
            f"no completed trial has {' and '.join(said)} (best {q}: trial {int(best['number'])}, {best[q]:.4f} at "
            f"{best[lat]:.3f} ms; fastest: trial {int(fastest['number'])}, {fastest[lat]:.3f} ms at {fastest[q]:.4f})"
        )
    return eligible


def export_student(
    results_dir: str | Path,
    pick: str = "knee",
    formats: tuple[str, ...] | None = None,
    out_dir: str | Path | None = None,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    log: Callable[[str], None] = print,
    max_perplexity: float | None = None,
) -> ExportResult:
    """Pick, export, verify and describe a study's student (the API behind ``autodistill export``)."""
    results_dir = Path(results_dir)
    complete, trials, summary = candidates(results_dir)
    config = load_config(layout.config_file(results_dir))
    task = get_task(config.task)
    if formats is not None:  # None: every format that fits the student, which the task decides
        formats = tuple(dict.fromkeys(formats))
        unknown = [f for f in formats if f not in task.export_formats]
        if unknown or not formats:
            raise AutodistillError(
                f"--format: unknown format(s) {', '.join(unknown) or '(none)'}; use a comma-separated list of {', '.join(task.export_formats)}"
            )
    objectives = summary["objectives"]
    row = pick_trial(complete, objectives, pick, max_latency_ms, min_accuracy, all_trials=trials, task=task, max_perplexity=max_perplexity)
    number = int(row["number"])
    out = Path(out_dir) if out_dir is not None else layout.export_dir(results_dir, number)
    rule = (
        pick
        if pick.isdigit()
        else f"{pick}"
        + "".join(
            f", {k} {v:g}"
            for k, v in ((f"max {task.latency_metrics[-1]}", max_latency_ms), ("min accuracy", min_accuracy), ("max perplexity", max_perplexity))
            if v is not None
        )
    )
    latency = task.latency_metrics[-1]
    log(f"picked trial {number} ({rule}): {task.quality} {row[task.quality]:.4f}, {int(row['params']):,} params, {latency} {row[latency]:.3f}")
    # read-only on the study, but a resume writing trials/ meanwhile would race: hold the lock
    with StudyLock(results_dir, log):
        try:
            return task.export(config, results_dir, summary, row, number, formats, out, rule, log)
        except DiskFull as err:  # nothing was written (the folder appears whole or not at all)
            raise DiskFull(f"{err}; free space, then run the export again") from None
