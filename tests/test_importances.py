"""fANOVA importances computed by a second process (autodistill._importances): the same
figures as in this process, and this process's when the child cannot run."""

import sys

import optuna
import pytest

from autodistill import _importances


def _trials(n=12):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        t = study.ask()
        x, width = t.suggest_float("lr", 1e-3, 1e-1, log=True), t.suggest_int("width", 8, 64)
        family = t.suggest_categorical("family", ["cnn", "resnet"])
        t.set_user_attr("curve", list(range(50)))  # not sent to the child
        study.tell(t, [1 - (x - 0.01) ** 2, width * (2 if family == "resnet" else 1)])
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_child_gives_the_same_importances_as_this_process(monkeypatch):
    trials = _trials()
    monkeypatch.setattr(_importances, "_cores", lambda: 2)
    job = _importances.start(trials, ["accuracy", "params"])
    assert job._proc is not None  # really a second process
    got = job.result()
    assert got == _importances.importances(trials, ["accuracy", "params"])
    assert set(got) == {"accuracy", "params"} and set(got["params"]) == {"lr", "width", "family"}
    assert got["params"]["width"] > got["params"]["lr"]  # params depend on width and family only
    assert sum(got["accuracy"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("executable", ["/nonexistent/python", sys.executable + "-not-there"])
def test_no_child_means_this_process(monkeypatch, executable):
    trials = _trials()
    monkeypatch.setattr(_importances, "_cores", lambda: 2)
    monkeypatch.setattr(sys, "executable", executable)
    assert _importances.start(trials, ["accuracy", "params"]).result() == _importances.importances(trials, ["accuracy", "params"])


def test_a_failing_child_means_this_process(monkeypatch):
    trials = _trials()
    monkeypatch.setattr(_importances, "_cores", lambda: 2)
    job = _importances.start(trials, ["accuracy", "params"])
    job._proc.kill()  # dies before it answers
    assert job.result() == _importances.importances(trials, ["accuracy", "params"])


def test_too_few_trials_or_one_core(monkeypatch):
    monkeypatch.setattr(_importances, "_cores", lambda: 1)
    one_core = _importances.start(_trials(), ["accuracy", "params"])
    assert one_core._proc is None and one_core.result() == _importances.importances(_trials(), ["accuracy", "params"])
    monkeypatch.undo()
    assert _importances.start(_trials(2), ["accuracy", "params"]).result() == {}
    assert _importances.importances(_trials(2), ["accuracy", "params"]) == {}
