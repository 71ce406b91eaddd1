"""Optuna's fANOVA importance of each searched parameter for each objective, computed in a
second process while the driver writes the other results.

Importing ``optuna.importance`` imports scikit-learn (its random forests): about 2 s, and the
forests another second, all on one core at the end of every study, with the others idle. So
:func:`start` hands the completed trials (pickled, on stdin) to a child Python that runs this
file as a script (``runpy``: the child imports Optuna only, not autodistill and torch) and
prints the importances as JSON; :meth:`Job.result` collects them. Where the child cannot run
(one core, or it failed), the same function runs in this process.

Only Optuna and the standard library are imported here, at module level or in the child.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from typing import Any

MIN_TRIALS = 3
"""fewer completed trials than this: no importances"""

TIMEOUT_S = 300.0


def importances(trials: list, objectives: list[str]) -> dict[str, dict[str, float]]:
    """{objective: {parameter: importance}} over ``trials`` (completed FrozenTrials); an
    objective is left out when no parameter took two values."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    if len(trials) < MIN_TRIALS:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * len(objectives))  # in memory; directions do not enter fANOVA
    study.add_trials(trials)
    out = {}
    for i, metric in enumerate(objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # fANOVA is experimental in Optuna, not deprecated
                values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError):  # e.g. no parameter took two values
            continue
        if values:
            out[metric] = {name: float(v) for name, v in values.items()}
    return out


class Job:
    """The importances being computed by a child process (or, without one, on request)."""

    def __init__(self, trials: list, objectives: list[str], proc: subprocess.Popen | None):
        self._trials, self._objectives, self._proc = trials, objectives, proc

    def result(self) -> dict[str, dict[str, float]]:
        if self._proc is not None:
            try:
                out, _ = self._proc.communicate(timeout=TIMEOUT_S)
                if self._proc.returncode == 0:
                    return {k: {p: float(v) for p, v in d.items()} for k, d in json.loads(out).items()}
            except (subprocess.TimeoutExpired, ValueError, OSError):
                self._proc.kill()
                self._proc.communicate()
        return importances(self._trials, self._objectives)  # the child failed: here, then


def start(trials: list, objectives: list[str]) -> Job:
    """Start computing the importances of ``trials`` (completed FrozenTrials) in a child
    process, when there are enough trials and a second core to run it on."""
    import optuna

    # what fANOVA reads, without the user attributes (curves, timings): a small pickle
    trials = [optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values) for t in trials]
    if len(trials) < MIN_TRIALS or _cores() < 2:
        return Job(trials, objectives, None)
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')", __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        with proc.stdin:
            pickle.dump((trials, objectives), proc.stdin)
        proc.stdin = None  # sent and closed: communicate() only reads
    except OSError:  # no process to spare (or it died at once): compute here
        if proc is not None:
            proc.kill()
            proc.wait()
        return Job(trials, objectives, None)
    return Job(trials, objectives, proc)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _main() -> None:
    trials, objectives = pickle.load(sys.stdin.buffer)  # from the parent process only
    result: dict[str, Any] = importances(trials, objectives)
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    _main()
