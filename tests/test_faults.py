"""Injected faults in a real study (real Ray, real sqlite storage): a trial that raises, one
whose loss becomes NaN, one whose worker is killed once (Ray restarts it and it continues
from its epoch checkpoint) and one whose worker is killed at every attempt. The study
completes, each failure is recorded with its reason in trials.csv and in Optuna, and the
other trials are unaffected."""

import os
import subprocess
import sys

import optuna
import pytest
from helpers import small_study

from autodistill import load_front, load_trials

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


def test_faults_are_recorded_and_the_study_goes_on(tmp_path):
    cfg = small_study(tmp_path, "faults", **{"search.trials": 5, "train.epochs": 4, "search.max_failures": 1})
    env = {**os.environ, "AUTODISTILL_INJECT_FAULTS": "0:raise,1:nan,2:kill,3:killall"}
    result = subprocess.run([sys.executable, "-m", "autodistill", "search", str(cfg)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr  # Ray's controller tracebacks are not shown
    results = tmp_path / "results" / "faults"
    trials = load_trials(results).set_index("number")
    assert len(trials) == 5
    assert trials.loc[0, "state"] == "FAIL" and trials.loc[0, "fail_reason"] == "RuntimeError: injected fault (AUTODISTILL_INJECT_FAULTS)"
    assert trials.loc[1, "state"] == "FAIL" and trials.loc[1, "fail_reason"].startswith("TrialDiverged: loss became nan at epoch 3")
    assert trials.loc[2, "state"] == "COMPLETE" and trials.loc[2, "epochs_done"] == 4  # restarted, continued from epoch 2
    assert trials.loc[3, "state"] == "FAIL"
    assert trials.loc[3, "fail_reason"].startswith("the trial's worker failed (after 1 restart(s)): The actor is dead")
    assert trials.loc[4, "state"] == "COMPLETE" and trials.loc[4, "epochs_done"] == 4
    stored = {t.number: t for t in optuna.load_study(study_name="faults", storage=f"sqlite:///{results / 'study.db'}").trials}
    for n in (0, 1, 3):
        assert stored[n].state.name == "FAIL" and stored[n].user_attrs["fail_reason"] == trials.loc[n, "fail_reason"]
    assert "fail_traceback" in stored[0].user_attrs and "injected fault" in stored[0].user_attrs["fail_traceback"]
    assert stored[2].user_attrs["accuracy_curve"] and len(stored[2].user_attrs["accuracy_curve"]) == 4
    assert set(load_front(results)["number"]) <= {2, 4}
    assert "complete 2, fail 3" in result.stdout
