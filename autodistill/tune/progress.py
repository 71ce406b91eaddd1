"""The driver's Ray Tune callback: keeps the study's live view and copies each completed
trial's checkpoint to ``trials/<number>/`` (before the trial is COMPLETE in Optuna, so a
killed driver never leaves a COMPLETE trial without its files)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .. import _io
from ..layout import trial_dir
from ..pareto import as_minimization, non_dominated_mask
from ..report import format_metric
from .searcher import OptunaSearcher, Outcome, ray_error_reason


class StudyProgress(Callback):
    """Live terminal view (rich) when stdout is a terminal; one line per finished trial otherwise."""

    def __init__(
        self,
        results_dir: Path,
        searcher: OptunaSearcher,
        objectives: dict[str, str],
        total: int,
        *,
        quality: str,
        console: Console | None = None,
        done_before: int = 0,
    ):
        self.results_dir = results_dir
        self.quality = quality  # the task's quality metric: shown for running trials, orders the front
        self.objectives = objectives
        self.total = total + done_before
        self.done_before = done_before
        self.console = console or Console(stderr=False)
        self.started_at = time.time()
        self.running: dict[str, dict[str, Any]] = {}
        self.counts = {"COMPLETE": 0, "FAIL": 0, "PRUNED": 0}
        self.complete: list[dict[str, Any]] = []
        self._searcher = searcher
        self._outcomes: dict[str, Outcome] = {}
        searcher.after_tell = self._record_outcome
        searcher.before_tell = self._before_tell
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the run config (with its callbacks) into the experiment directory.
        state = self.__dict__.copy()
        state.update(console=None, _live=None, _searcher=None, _outcomes={})
        return state

    # --- view -------------------------------------------------------------------------
    def start(self) -> None:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _front(self) -> list[dict[str, Any]]:
        if not self.complete:
            return []
        names = list(self.objectives)
        values = np.array([[row[m] for m in names] for row in self.complete], dtype=float)
        mask = non_dominated_mask(as_minimization(values, [self.objectives[m] for m in names]))
        front = [row for row, keep in zip(self.complete, mask) if keep]
        sign = -1 if self.objectives.get(self.quality, "max") == "max" else 1
        return sorted(front, key=lambda r: sign * r[self.quality] if self.quality in r else 0)

    def _render(self) -> Group:
        elapsed = time.time() - self.started_at
        done = self.done_before + sum(self.counts.values())
        status = Text(
            f"trials {done}/{self.total} done ({self.counts['COMPLETE']} complete, {self.counts['FAIL']} failed, "
            f"{self.counts['PRUNED']} stopped), {len(self.running)} running, {elapsed:.0f} s"
        )
        running = Table(title="running", title_justify="left", box=None)
        for col in ("trial", "epoch", self.quality, "params"):
            running.add_column(col, justify="right")
        for info in self.running.values():
            running.add_row(
                str(info.get("number", "?")),
                f"{info.get('epoch', 0)}/{info.get('epochs', '?')}",
                format_metric(self.quality, info.get(self.quality)),
                format_metric("params", info.get("params")),
            )
        front = Table(title="Pareto front so far", title_justify="left")
        front.add_column("trial", justify="right")
        for metric in self.objectives:
            front.add_column(metric, justify="right")
        for row in self._front()[:12]:
            front.add_row(str(row["number"]), *(format_metric(m, row.get(m)) for m in self.objectives))
        return Group(status, running, front)

    def print(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stdout, flush=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    # --- Ray callback hooks -----------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._searcher.ray_trials[trial.trial_id] = trial
        self.running[trial.trial_id] = {"number": trial.config.get("number"), "epoch": 0}
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        entry = self.running.setdefault(trial.trial_id, {"number": trial.config.get("number")})
        for key in ("epoch", "epochs", self.quality, "params"):
            if key in result:
                entry[key] = result[key]
        self._refresh()

    def _record_outcome(self, trial_id: str, outcome: Outcome) -> None:
        self._outcomes[trial_id] = outcome

    def _before_tell(self, trial_id: str, outcome: Outcome) -> None:
        if outcome.state == "COMPLETE":
            trial = self._searcher.ray_trials.get(trial_id)
            if trial is None or trial.checkpoint is None:
                raise RuntimeError("the trial finished without a checkpoint")
            self._copy_checkpoint(trial, outcome.number)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """Ray restarts a trial whose worker died (killed, out of memory, its node lost)."""
        number = trial.config.get("number", "?")
        allowed = getattr(trial, "max_failures", "?")
        self.print(f"trial {number}: {ray_error_reason(trial)}; restarting it (restart {trial.num_failures} of {allowed})")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial)

    def record_unreported(self, outcomes: list[Outcome]) -> None:
        """Outcomes of trials Ray never reported as finished (still running at the end)."""
        for outcome in outcomes:
            self._count_and_print(outcome)
        self._outcomes.clear()

    def _finish(self, trial) -> None:
        self.running.pop(trial.trial_id, None)
        self._searcher.ray_trials.pop(trial.trial_id, None)
        outcome = self._outcomes.pop(trial.trial_id, None)
        if outcome is None:
            return
        if outcome.state == "COMPLETE":
            self.complete.append({"number": outcome.number, **outcome.metrics})
        self._count_and_print(outcome)

    def _count_and_print(self, outcome: Outcome) -> None:
        if not outcome.interrupted:  # interrupted trials are retried by resume, not counted
            self.counts[outcome.state] += 1
        self.print(self._line(outcome))
        self._refresh()

    def _line(self, outcome: Outcome) -> str:
        if outcome.interrupted:
            return f"trial {outcome.number} {outcome.reason}"
        done = self.done_before + sum(self.counts.values())
        head = f"[{done}/{self.total}] trial {outcome.number} {outcome.state.lower()}"
        if outcome.continues is not None:
            resumed = outcome.metrics.get("resumed_epoch")
            head += f" (continued trial {outcome.continues}" + (f" from epoch {resumed})" if resumed else ", restarted)")
        restarts = outcome.metrics.get("restarts")
        if restarts and outcome.state != "FAIL":  # a failed one says so in its reason
            after = outcome.metrics.get("restarted_from_epoch")
            head += f" (its worker was restarted {restarts} time(s); " + (
                f"it continued from its epoch {after} checkpoint)" if after else "it started again from epoch 1: no checkpoint on its new node)"
            )
        if outcome.state != "COMPLETE":
            return f"{head}: {outcome.reason}"
        m = outcome.metrics
        shown = dict.fromkeys([*self.objectives, "params"])  # the study's objectives, then params
        parts = [f"{k} {format_metric(k, m.get(k))}" for k in shown if k in m]
        return f"{head}: " + ", ".join(parts) + f" ({m.get('trial_s', 0):.1f} s)"

    def _copy_checkpoint(self, trial, number: int) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with _io.atomic_dir(trial_dir(self.results_dir, number)) as tmp:
            checkpoint.to_directory(str(tmp))
