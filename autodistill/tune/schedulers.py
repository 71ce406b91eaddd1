"""Early stopping, as Ray Tune schedulers (``search.pruner``).

- ``pareto``: multi-objective successive halving, asynchronous (MOASHA, Schmucker et al.
  2021). Rungs are at ``grace_period * reduction_factor**k`` epochs. When a trial reaches a
  rung it is ranked among every trial that reached that rung so far, by non-dominated
  sorting over (accuracy at the rung, the cost objectives as they are at that point: params,
  MACs and size are known before training, latency is measured once before training and
  again after pruning). The best ``1 / reduction_factor`` of them go on, taking whole
  fronts: a trial goes on when its rank is no worse than that of the k-th best (k = n / eta),
  so a trial that no other trial dominates at its rung is never stopped; nobody is stopped
  while fewer than ``min_trials_per_rung`` trials reached the rung. A small student is thus
  stopped only by students that are both as cheap and more accurate, never for being less
  accurate than big ones.
- ``asha``: Ray's ASHA on accuracy alone (the baseline the Pareto scheduler is measured
  against).
- ``median``, ``percentile``, ``successive_halving``, ``hyperband``, ``wilcoxon``: Optuna's
  pruners, for single-objective studies: each epoch's accuracy is reported to the Optuna
  trial and the pruner decides (Optuna refuses ``Trial.report`` in multi-objective studies).

A stopped trial reaches Optuna as PRUNED with the scheduler's reason (never as COMPLETE with
its low-fidelity accuracy); its per-epoch accuracies are on the trial (``accuracy_curve``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .._errors import StorageUnavailable
from ..config import SearchConfig
from ..pareto import as_minimization, non_dominated_ranks


def rungs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """Epochs at which a trial is judged: grace * eta**k, below ``max_epochs``."""
    out, k = [], 0
    while True:
        epoch = int(round(grace_period * reduction_factor**k))
        if epoch >= max_epochs:
            return out
        if not out or epoch > out[-1]:
            out.append(epoch)
        k += 1


class ParetoRungScheduler(FIFOScheduler):
    """Multi-objective asynchronous successive halving (see module doc)."""

    def __init__(
        self, objectives: dict[str, str], grace_period: int, reduction_factor: float, min_trials_per_rung: int, stop_reasons: dict[str, str], *, quality: str
    ):
        super().__init__()
        if quality not in objectives:
            raise ValueError(f"the pareto scheduler ranks by {quality} at each rung: objectives must include {quality}")
        self.objectives = objectives
        self.grace_period = grace_period
        self.eta = reduction_factor
        self.min_trials = min_trials_per_rung
        self.stop_reasons = stop_reasons  # trial_id -> why it was stopped (read by the searcher)
        self.recorded: dict[int, dict[str, np.ndarray]] = {}  # rung epoch -> {trial_id: objective vector}

    def decide(self, trial_id: str, epoch: int, epochs: int, metrics: dict[str, Any]) -> str:
        """CONTINUE or STOP for a trial that reports ``metrics`` after ``epoch`` of ``epochs``."""
        if epoch not in rungs(self.grace_period, self.eta, epochs):
            return TrialScheduler.CONTINUE
        names = list(self.objectives)
        if any(not isinstance(metrics.get(m), (int, float)) or not math.isfinite(metrics[m]) for m in names):
            return TrialScheduler.CONTINUE  # a cost not known yet: nothing to rank on
        at_rung = self.recorded.setdefault(epoch, {})
        at_rung[trial_id] = np.array([float(metrics[m]) for m in names])
        if len(at_rung) < self.min_trials:
            return TrialScheduler.CONTINUE
        ids = list(at_rung)
        values = as_minimization(np.stack([at_rung[i] for i in ids]), [self.objectives[m] for m in names])
        ranks = non_dominated_ranks(values)
        keep = max(1, int(len(ids) / self.eta))
        threshold = int(np.sort(ranks)[keep - 1])  # whole fronts: every trial as good as the keep-th goes on
        rank = int(ranks[ids.index(trial_id)])
        if rank <= threshold:
            return TrialScheduler.CONTINUE
        self.stop_reasons[trial_id] = (
            f"stopped by the pareto scheduler at epoch {epoch}: non-dominated rank {rank} among {len(ids)} trials at this rung "
            f"(the best {keep} go on, with every trial of rank <= {threshold})"
        )
        return TrialScheduler.STOP

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("finished") or result.get("failed") or "epoch" not in result:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(result["epoch"]), int(result.get("epochs", 0)), result)

    def debug_string(self) -> str:
        return f"ParetoRungScheduler: grace {self.grace_period}, eta {self.eta:g}, " + ", ".join(
            f"rung {r}: {len(v)}" for r, v in sorted(self.recorded.items())
        )


class QualityASHA(FIFOScheduler):
    """Ray's ASHA on the task's quality metric alone (validation accuracy for images),
    recording why it stopped a trial."""

    def __init__(self, grace_period: int, reduction_factor: float, max_epochs: int, stop_reasons: dict[str, str], *, quality: str, mode: str):
        from ray.tune.schedulers import ASHAScheduler

        super().__init__()
        self.quality = quality
        self.asha = ASHAScheduler(
            metric=quality,
            mode=mode,
            time_attr="epoch",
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            max_t=max(max_epochs, grace_period + 1),
        )
        self.stop_reasons = stop_reasons

    def on_trial_add(self, tune_controller, trial) -> None:
        self.asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("finished") or result.get("failed") or "epoch" not in result:
            return TrialScheduler.CONTINUE
        decision = self.asha.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stop_reasons[trial.trial_id] = f"stopped by {self.quality}-only ASHA at epoch {int(result['epoch'])}"
        return decision

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self.asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.asha.on_trial_remove(tune_controller, trial)


class OptunaPrunerScheduler(FIFOScheduler):
    """Optuna's pruner decides, from the quality metric (accuracy) reported to the Optuna trial each epoch."""

    def __init__(self, pruner, searcher, stop_reasons: dict[str, str], name: str, *, quality: str):
        super().__init__()
        self.quality = quality
        self.pruner = pruner
        self.searcher = searcher
        self.stop_reasons = stop_reasons
        self.name = name

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        optuna_trial = self.searcher.live_trial(trial.trial_id)
        if optuna_trial is None or result.get("finished") or result.get("failed") or "epoch" not in result or self.quality not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result["epoch"])
        try:
            optuna_trial.report(float(result[self.quality]), step=epoch)
            study = optuna_trial.study
            frozen = study._storage.get_trial(optuna_trial._trial_id)
            prune = self.pruner.prune(study, frozen)
        except StorageUnavailable as err:  # the study stops; resume continues the trial
            self.searcher.storage_lost(err)
            return TrialScheduler.CONTINUE
        if prune:
            self.stop_reasons[trial.trial_id] = f"stopped by Optuna's {self.name} pruner at epoch {epoch}"
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


OPTUNA_PRUNERS = {
    "median": lambda es, max_epochs: optuna.pruners.MedianPruner(n_startup_trials=es.min_trials_per_rung, n_warmup_steps=es.grace_period - 1),
    "percentile": lambda es, max_epochs: optuna.pruners.PercentilePruner(
        es.percentile, n_startup_trials=es.min_trials_per_rung, n_warmup_steps=es.grace_period - 1
    ),
    "successive_halving": lambda es, max_epochs: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=es.grace_period, reduction_factor=int(round(es.reduction_factor))
    ),
    "hyperband": lambda es, max_epochs: optuna.pruners.HyperbandPruner(
        min_resource=es.grace_period, max_resource=max_epochs, reduction_factor=int(round(es.reduction_factor))
    ),
    "wilcoxon": lambda es, max_epochs: optuna.pruners.WilcoxonPruner(n_startup_steps=es.grace_period),
}
"""search.pruner -> the Optuna pruner with the settings of search.early_stopping"""


def make_optuna_pruner(name: str, search: SearchConfig, max_epochs: int):
    try:
        return OPTUNA_PRUNERS[name](search.early_stopping, max_epochs)
    except KeyError:
        raise ValueError(f"unknown Optuna pruner {name!r}; valid: {', '.join(OPTUNA_PRUNERS)}") from None


def make_scheduler(search: SearchConfig, objectives: dict[str, str], max_epochs: int, searcher, stop_reasons: dict[str, str], *, quality: str):
    """The Ray scheduler for ``search.pruner`` (None for ``none``); ``quality`` is the task's
    quality metric, which ASHA and the Optuna pruners judge by (the pareto scheduler ranks
    every objective)."""
    es = search.early_stopping
    if search.pruner == "none":
        return None
    if search.pruner == "pareto":
        return ParetoRungScheduler(objectives, es.grace_period, es.reduction_factor, es.min_trials_per_rung, stop_reasons, quality=quality)
    if search.pruner == "asha":
        return QualityASHA(es.grace_period, es.reduction_factor, max_epochs, stop_reasons, quality=quality, mode=objectives.get(quality, "max"))
    return OptunaPrunerScheduler(make_optuna_pruner(search.pruner, search, max_epochs), searcher, stop_reasons, search.pruner, quality=quality)
