"""A Ray Tune searcher backed by an Optuna study in persistent storage (ask/tell).

Why not Ray's ``OptunaSearch``: it tells a stopped trial's last, low-fidelity result to Optuna
as COMPLETE, and it has no place for a failure's reason. Here every outcome is mapped
explicitly:

- finished training with finite objectives -> COMPLETE with the objective values
- the trial reported ``failed`` (raised, diverged), or its worker died -> FAIL, reason stored
- stopped before its last epoch (time budget, scheduler) -> PRUNED, with the scheduler's reason
- a cost breaks a constraint before training -> PRUNED with ``infeasible`` set, not trained
- running when the driver was interrupted (Ctrl-C, SIGTERM) -> FAIL with ``interrupted``
  set; ``autodistill resume`` retries it as a new trial that continues from its last epoch
  checkpoint (``inflight/<number>.pt``). A driver killed outright leaves the trial RUNNING;
  resume fails it the same way first (see :mod:`autodistill.tune.resume`).

Metrics, the per-epoch curve of the task's quality metric (``accuracy_curve``) and the reason
are stored as user attributes of the Optuna trial, so the study database alone is a full
record (``optuna-dashboard`` shows it).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from .._errors import DiskFull, StorageUnavailable
from ..config import Bound
from ..constraints import constraint_values
from ..layout import inflight_path
from ..space import Dimension, sample
from ..tasks import Task, curve_attr
from .prescreen import EPOCHS_ATTR as PRESCREEN_EPOCHS

RUN_METRICS = ("train_s", "steps_s", "trial_s", "worker_rss_mb", "epoch", "resumed_epoch", "restarted_from_epoch", "first_step_at", "node", "worker_pid")
"""what every trial reports of its run, whatever its task"""


@dataclass
class Outcome:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    interrupted: bool = False
    continues: int | None = None  # the interrupted trial this one continued


INTERRUPTED = "interrupted: the driver stopped while it ran"


class OptunaSearcher(Searcher):
    def __init__(
        self,
        study: optuna.Study,
        space: list[Dimension],
        objectives: dict[str, str],
        max_trials: int,
        *,
        task: Task,
        inflight_dir: Path | None = None,
        epoch_budget: int | None = None,
        constraints: dict[str, Bound] | None = None,
    ):
        super().__init__(metric=task.quality, mode=task.quality_mode)
        if max_trials < 0:
            raise ValueError(f"max_trials must be at least 0 but got {max_trials}.")
        self._study = study
        self._quality, self._curve_attr = task.quality, curve_attr(task.quality)
        self._recorded = tuple(dict.fromkeys([*task.recorded_metrics, *task.optional_metrics, *objectives, *RUN_METRICS]))
        self._space = space
        self._constraints = constraints or {}  # the study's bounds: each finished trial's values go to the samplers
        self._objectives = objectives
        self._max_trials = max_trials
        self._started = 0
        self._live: dict[str, optuna.Trial] = {}
        self._curves: dict[str, list[float]] = {}
        self._last: dict[str, dict] = {}
        self._inflight_dir = Path(inflight_dir) if inflight_dir is not None else None
        # compute spent, in student-epochs over all trials (earlier runs of the study included)
        self.epoch_budget = epoch_budget
        self.epochs_spent = epochs_spent(study, task.quality)
        self._counted: dict[str, int] = {}  # trial_id -> last epoch counted
        self.stop_reason = "stopped"  # what a PRUNED trial's reason says stopped it
        self.stop_reasons: dict[str, str] = {}  # trial_id -> why the scheduler stopped it (filled by the scheduler)
        self.interrupted = False  # set by the driver's signal handler: unfinished trials are retried on resume
        self.fault: DiskFull | StorageUnavailable | None = None  # a machine fault that stopped the study (the disk filled up, the storage went away)
        self.ray_trials: dict[str, Any] = {}  # trial_id -> ray Trial, filled by the study callback
        # Called with (trial_id, outcome) before the outcome is told to Optuna: the study
        # callback copies a COMPLETE trial's checkpoint there, so a trial is never COMPLETE in
        # the storage without its files. Raising turns the outcome into FAIL.
        self.before_tell: Callable[[str, Outcome], None] | None = None
        # Called with (trial_id, outcome) once Optuna has it: the study callback counts and prints it.
        self.after_tell: Callable[[str, Outcome], None] | None = None
        # Called once, the first time no trial is left to hand out and a slot stands idle while
        # the last trials run (the runner starts the report's imports there): when a trial ends
        # after the last was handed out, or when Ray Tune asks for one and none is left.
        self.when_none_left: Callable[[], None] | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # objectives come from the study config, not from Tune

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        # A stopping study (a signal, a full disk, the storage gone) asks for no more trials;
        # FINISHED, not None: with no trial running, Ray Tune asks again every second for up
        # to 600 s before it looks at the stopper (a test saw the driver hang 240 s).
        if self._started >= self._max_trials or self.budget_spent() or self.interrupted:
            self._none_left()
            return Searcher.FINISHED
        try:
            trial = self._study.ask()  # an enqueued retry of an interrupted trial comes first
            params = sample(trial, self._space)
            continues = trial.user_attrs.get("continues")
            seed_number = trial.user_attrs.get("seed_number", trial.number)
            trial.set_user_attr("ray_trial_id", trial_id)
            trial.set_user_attr("seed_number", seed_number)
        except StorageUnavailable as err:
            self.storage_lost(err)
            return Searcher.FINISHED
        self._live[trial_id] = trial
        self._curves[trial_id] = []
        self._started += 1
        config: dict[str, Any] = {"number": trial.number, "params": params, "seed_number": seed_number}
        if self._inflight_dir is not None:
            config["inflight"] = str(inflight_path(self._inflight_dir, trial.number))
            if continues is not None:
                config["continues"] = int(continues)
                config["resume_from"] = str(inflight_path(self._inflight_dir, int(continues)))
        return config

    def budget_spent(self) -> bool:
        return self.epoch_budget is not None and self.epochs_spent >= self.epoch_budget

    def _count_epochs(self, trial_id: str, result: dict) -> None:
        """Each epoch a trial trains counts once; epochs restored from a checkpoint (an
        interrupted trial's, counted with it) do not."""
        counted = self._counted.get(trial_id, 0)
        if "prior_curve" in result:
            counted = max(counted, len(result["prior_curve"]))
        epoch = int(result["epoch"])
        self.epochs_spent += max(0, epoch - counted)
        self._counted[trial_id] = max(counted, epoch)

    def live_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial of a running Ray trial (for an Optuna pruner's reports)."""
        return self._live.get(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._quality in result and trial_id in self._curves:
            curve = self._curves[trial_id]
            if "prior_curve" in result:  # continued from a checkpoint (an interrupted trial's, or its own after a restart)
                curve[:] = [float(a) for a in result["prior_curve"]]
            # a report carries the quality metric of each epoch since the previous one
            tail = [float(a) for a in result.get("curve_tail") or [result[self._quality]]]
            if "epoch" in result:  # never two entries for one epoch
                del curve[int(result["epoch"]) - len(tail) :]
                self._count_epochs(trial_id, result)
            curve.extend(tail)
            self._last[trial_id] = result
            # stored as it grows: optuna-dashboard shows live curves, and a killed driver
            # leaves the curve up to its last epoch
            try:
                self._live[trial_id].set_user_attr(self._curve_attr, curve)
            except StorageUnavailable as err:  # the study stops (not a TuneError out of Ray's loop); resume continues the trial
                self.storage_lost(err)

    def close_live(self) -> list[Outcome]:
        """Record the trials still running when the Tuner returned: Ray does not report them
        to the searcher. At the time budget they become PRUNED; after an interrupt, FAIL with
        ``interrupted`` set, to be retried by ``resume``."""
        outcomes = []
        for trial_id in list(self._live):
            last = dict(self._last.get(trial_id) or {"epoch": 0})
            ray_trial = self.ray_trials.get(trial_id)
            if not (ray_trial is not None and getattr(ray_trial, "checkpoint", None) is not None):
                # complete only with its final result *and* checkpoint in: the epoch budget
                # can run out on a trial's last epoch, before Ray saw the trial end
                last.pop("finished", None)
            outcomes.append(self.on_trial_complete(trial_id, last))
        return outcomes

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> Outcome | None:
        if trial_id not in self._live:
            return None
        if result and self._quality in result and "epoch" in result:
            # the last result: Ray passes it here only when the trial finished or a scheduler
            # stopped it at this epoch (then on_trial_result never saw it)
            self.on_trial_result(trial_id, result)
        trial = self._live.pop(trial_id)
        if self._started >= self._max_trials:
            # Ray Tune asks for no trial beyond num_samples: the last trial was handed out,
            # and this one's slot now stands idle
            self._none_left()
        curve = self._curves.pop(trial_id, [])
        self._last.pop(trial_id, None)
        self._counted.pop(trial_id, None)
        try:
            return self._record(trial, trial_id, curve, result, error)
        except StorageUnavailable as err:  # not recorded: the trial stays RUNNING in the storage, and resume continues it
            self.storage_lost(err)
            outcome = Outcome(trial.number, "FAIL", {}, f"{INTERRUPTED}: {err}", interrupted=True)
            if self.after_tell is not None:
                self.after_tell(trial_id, outcome)
            return outcome

    def _none_left(self) -> None:
        hook, self.when_none_left = self.when_none_left, None
        if hook is not None:
            with contextlib.suppress(Exception):  # a head start for the report: never worth a trial's record
                hook()

    def storage_lost(self, err: StorageUnavailable) -> None:
        """The Optuna storage stayed unreachable: the study stops (its running trials are
        recorded as interrupted where the storage allows) and the driver exits with the one
        line of :attr:`fault`."""
        self.fault = self.fault or err
        self.interrupted = True
        self.stop_reason = "interrupted"

    def _record(self, trial: optuna.Trial, trial_id: str, curve: list[float], result: dict | None, error: bool) -> Outcome:
        trial.set_user_attr(self._curve_attr, curve)
        trial.set_user_attr("study_epochs", self.epochs_spent)  # the study's compute when this trial ended
        outcome = self._outcome(trial, trial_id, result, error)
        outcome.continues = trial.user_attrs.get("continues")
        if self.before_tell is not None:
            try:
                self.before_tell(trial_id, outcome)
            except DiskFull as err:  # its checkpoint could not be copied: retried on resume, the study stops
                outcome = self._stop_for_disk(trial.number, outcome.metrics, str(err))
                outcome.continues = trial.user_attrs.get("continues")
            except Exception as err:  # e.g. the checkpoint could not be copied
                outcome.state, outcome.reason = "FAIL", f"{type(err).__name__}: {err}"
        self._tell(trial, outcome)
        if self.after_tell is not None:
            self.after_tell(trial_id, outcome)
        return outcome

    def _stop_for_disk(self, number: int, metrics: dict[str, Any], reason: str) -> Outcome:
        """A write ran out of space: the trial is recorded as interrupted (resume retries it
        from its last epoch checkpoint) and the study stops; the driver then exits with the
        one line of :attr:`fault`."""
        self.fault = self.fault or DiskFull(reason)
        self.interrupted = True
        self.stop_reason = "interrupted"
        return Outcome(number, "FAIL", metrics, f"{INTERRUPTED}: {reason}", interrupted=True)

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Record the outcome on the Optuna trial and finish it; its in-flight checkpoint goes."""
        for key, value in outcome.metrics.items():
            trial.set_user_attr(key, value)
        if outcome.reason:
            trial.set_user_attr("fail_reason", outcome.reason)
        if outcome.interrupted:
            trial.set_user_attr("interrupted", True)
        if self._constraints and outcome.state in ("COMPLETE", "PRUNED"):  # what a sampler's constraints_func did
            for key, value in constraint_values(self._constraints, outcome.metrics).items():
                trial.set_constraint(key, value)
        if outcome.state == "COMPLETE":
            self._study.tell(trial, [outcome.metrics[m] for m in self._objectives])
        else:
            self._study.tell(trial, state=TrialState[outcome.state])
        if self._inflight_dir is not None and not outcome.interrupted:
            for number in (outcome.number, outcome.continues):  # no longer needed to continue
                if number is not None:
                    inflight_path(self._inflight_dir, number).unlink(missing_ok=True)

    def _outcome(self, trial: optuna.Trial, trial_id: str, result: dict | None, error: bool) -> Outcome:
        metrics = {k: result[k] for k in self._recorded if result and k in result}
        restarts = getattr(self.ray_trials.get(trial_id), "num_failures", 0)
        if restarts:  # Ray restarted its worker (killed, out of memory, node lost)
            metrics["restarts"] = int(restarts)
        if error:
            return Outcome(trial.number, "FAIL", metrics, ray_error_reason(self.ray_trials.get(trial_id)))
        if result and result.get("disk_full"):  # the trial could not write its checkpoint
            return self._stop_for_disk(trial.number, metrics, result.get("fail_reason", "no space left on device"))
        finished = bool(result and (result.get("finished") or result.get("failed")))
        if self.interrupted and not error and not finished:
            epoch = (result or {}).get("epoch", 0)
            return Outcome(trial.number, "FAIL", metrics, f"{INTERRUPTED} (after epoch {epoch})", interrupted=True)
        if result is None:  # Ray stopped it before it reported anything
            return Outcome(trial.number, "PRUNED", metrics, f"{self.stop_reason} before its first epoch")
        if result.get("infeasible"):  # a cost broke a constraint: not trained
            trial.set_user_attr("infeasible", True)
            return Outcome(trial.number, "PRUNED", metrics, result.get("fail_reason", "infeasible"))
        if result.get("failed"):
            if result.get("fail_traceback"):
                trial.set_user_attr("fail_traceback", result["fail_traceback"])
            return Outcome(trial.number, "FAIL", metrics, result.get("fail_reason", "unknown error"))
        if not result.get("finished"):
            epoch = result.get("epoch", 0)
            when = f"after epoch {epoch}" if epoch else "before its first epoch"
            if epoch and epoch == result.get("epochs"):  # its final report was in, its checkpoint not yet
                when = f"after its last epoch ({epoch}), before its checkpoint was kept"
            reason = self.stop_reasons.pop(trial_id, None) or f"{self.stop_reason} {when}"
            return Outcome(trial.number, "PRUNED", metrics, reason)
        bad = [m for m in self._objectives if not math.isfinite(float(metrics.get(m, math.nan)))]
        if bad:
            return Outcome(trial.number, "FAIL", metrics, f"non-finite objective(s): {', '.join(bad)}")
        return Outcome(trial.number, "COMPLETE", metrics)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the Tuner (with its searcher) into the experiment directory; the live
        # Optuna objects hold locks and a database connection. ``autodistill resume`` never
        # restores this pickle: the Optuna storage is the study's state.
        state = self.__dict__.copy()
        state.update(_study=None, _live={}, _curves={}, _last={}, _counted={}, ray_trials={}, before_tell=None, after_tell=None, when_none_left=None)
        return state

    # Ray saves searcher state with its experiment; the Optuna storage holds the real state,
    # so only the mapping of live Ray trials to Optuna trials is kept (for inspection).
    def save(self, checkpoint_path: str) -> None:
        state = {"started": self._started, "live": {tid: t.number for tid, t in self._live.items()}}
        with open(checkpoint_path, "w") as fh:
            json.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self._started = state["started"]


def epochs_spent(study: optuna.Study, quality: str) -> int:
    """Student-epochs the study's trials have trained so far: each trial's curve of the
    ``quality`` metric, less the epochs it took over from the interrupted trial it continued;
    plus those of the pre-screen (``search.prescreen``), when the study ran one."""
    total = int(study.user_attrs.get(PRESCREEN_EPOCHS, 0) or 0)
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        total += max(0, len(attrs.get(curve_attr(quality), [])) - int(attrs.get("resumed_epoch", 0) or 0))
    return total


def ray_error_reason(ray_trial: Any) -> str:
    """The last line of the error Ray recorded for a trial whose worker failed (e.g. killed)."""
    fallback = "the trial's worker failed"
    path = getattr(ray_trial, "error_file", None) if ray_trial is not None else None
    if not path:
        return fallback
    try:
        with open(path) as fh:
            lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("Failure #")]
    except OSError:
        return fallback
    if not lines:
        return fallback
    last = lines[-1].split(" Some common causes")[0]  # Ray's advice that follows is generic
    restarts = getattr(ray_trial, "num_failures", 0)
    retried = f" (after {restarts - 1} restart(s))" if restarts and restarts > 1 else ""
    return f"{fallback}{retried}: {last[:300]}"
