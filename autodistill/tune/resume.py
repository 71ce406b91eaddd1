"""What a study still owes after an interruption, read from its Optuna storage alone.

A trial counts towards ``search.trials`` once it has an outcome of its own: COMPLETE, PRUNED
(stopped by the time budget or a scheduler) or FAIL (raised, diverged, worker died). A trial
that was running when the driver stopped has no outcome of its own:

- after Ctrl-C or SIGTERM the driver recorded it as FAIL with ``interrupted`` set;
- after SIGKILL or a reboot it is still RUNNING in the storage. The caller holds the results
  directory's lock, so no live driver owns it: it is stale, and is failed here the same way.

Each interrupted trial is retried once, as an enqueued trial with the same parameters and
``continues = <its number>``; the retry continues from the interrupted trial's last epoch
checkpoint when that file exists. Interrupted trials are not counted, retries are, so no
trial is counted twice and the number of counted trials ends equal to the request.

A trial killed while its parameters were being sampled (Optuna had created it, Ray never got
it: it has no ``ray_trial_id``) never trained and may hold only some of its parameters: it is
failed as interrupted but not retried; the study samples a new trial in its place (or, if it
was itself a retry, retries the trial it continued).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .._errors import CheckpointError
from ..checkpoints import load_train_state
from ..layout import inflight_path
from ..tasks import curve_attr
from .searcher import INTERRUPTED


@dataclass
class Recovery:
    counted: int = 0  # trials with an outcome of their own
    failed_stale: list[int] = field(default_factory=list)  # RUNNING trials failed now
    retries: dict[int, int | None] = field(default_factory=dict)  # interrupted trial -> epoch it continues from (None: restarts)
    waiting: int = 0  # retries enqueued earlier and not started yet (counted in retries)


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.is_finished() and not trial.user_attrs.get("interrupted")


def started(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial was handed to Ray (the searcher records its Ray id once every
    parameter is sampled)."""
    return "ray_trial_id" in trial.user_attrs


def recover(study: optuna.Study, inflight_dir: Path, quality: str, log: Callable[[str], None] = print) -> Recovery:
    """Fail stale RUNNING trials and enqueue a retry for every interrupted trial without one
    (``quality``: the task's quality metric, whose curve says how many epochs a trial did)."""
    storage = study._storage
    rec = Recovery()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        epochs = len(trial.user_attrs.get(curve_attr(quality), []))
        when = f"after epoch {epochs}" if started(trial) else "before it started: its parameters were being sampled"
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"{INTERRUPTED} ({when}; left RUNNING by a killed driver)")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        rec.failed_stale.append(trial.number)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["continues"] for t in trials if "continues" in t.user_attrs and (started(t) or t.state == TrialState.WAITING)}
    rec.waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    rec.counted = sum(1 for t in trials if counted(t))
    for trial in trials:
        if not (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")) or trial.number in retried or not started(trial):
            continue
        path = inflight_path(inflight_dir, trial.number)
        epoch = None
        if path.is_file():
            try:
                epoch = int(load_train_state(path)["epoch"])
            except CheckpointError as err:
                log(f"trial {trial.number}: {err}; it restarts from epoch 1")
        study.enqueue_trial(
            trial.params,
            user_attrs={"continues": trial.number, "seed_number": trial.user_attrs.get("seed_number", trial.number)},
            skip_if_exists=False,
        )
        rec.retries[trial.number] = epoch
    return rec


def describe(rec: Recovery, target: int) -> list[str]:
    lines = []
    if rec.failed_stale:
        lines.append(f"trial(s) {', '.join(map(str, rec.failed_stale))} were left running by a stopped driver: recorded as failed (interrupted)")
    for number, epoch in rec.retries.items():
        how = f"continues from its epoch {epoch} checkpoint" if epoch else "restarts from epoch 1 (no epoch checkpoint)"
        lines.append(f"trial {number} was interrupted: retried as a new trial that {how}")
    if rec.waiting:
        lines.append(f"{rec.waiting} retry(ies) enqueued by an earlier resume start first")
    lines.append(f"{rec.counted} of {target} trial(s) already finished; {max(target - rec.counted, 0)} to run")
    return lines
