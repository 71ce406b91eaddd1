"""Early stopping: the rung arithmetic, the Pareto scheduler's decisions on hand-made
trials, and real studies in which stopped trials reach Optuna as PRUNED with their reason
and curves, and never enter the front."""

import json

import optuna
import pandas as pd
import pytest
from helpers import run_cli, small_study
from ray.tune.schedulers import TrialScheduler

from autodistill.config import parse_config
from autodistill.tune.schedulers import ParetoRungScheduler, rungs

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def test_rungs():
    assert rungs(1, 2, 8) == [1, 2, 4]
    assert rungs(2, 3, 15) == [2, 6]
    assert rungs(3, 3, 3) == []  # nothing to judge before the last epoch
    assert rungs(1, 1.5, 5) == [1, 2, 3]  # rounded, no rung twice


def _scheduler(min_trials=2, eta=2.0):
    return ParetoRungScheduler(
        {"accuracy": "max", "params": "min"}, grace_period=1, reduction_factor=eta, quality="accuracy", min_trials_per_rung=min_trials, stop_reasons={}
    )


def test_pareto_scheduler_keeps_cheap_students_that_accuracy_alone_would_stop():
    s = _scheduler(min_trials=2, eta=2.0)
    at = lambda tid, acc, params, epoch=1: s.decide(tid, epoch, 8, {"accuracy": acc, "params": params})  # noqa: E731
    assert at("big", 0.90, 10_000) == GO  # alone at the rung: min_trials not reached
    assert at("small", 0.50, 100) == GO  # less accurate but cheaper: on the rung's front
    assert at("mid-dominated", 0.60, 20_000) == STOP  # worse and dearer than "big"
    assert "rank 1" in s.stop_reasons["mid-dominated"] and "epoch 1" in s.stop_reasons["mid-dominated"]
    assert at("tiny", 0.40, 50) == GO  # the cheapest yet: on the front
    # five at the rung now, keep = 2: a trial dominated by the front goes, the front stays
    assert at("dominated-small", 0.45, 120) == STOP  # "small" is cheaper and more accurate
    # not a rung epoch: no decision, nothing recorded
    assert at("dominated-small", 0.1, 10**6, epoch=3) == GO
    assert set(s.recorded) == {1}


def test_pareto_scheduler_waits_for_costs_and_for_enough_trials():
    s = _scheduler(min_trials=3)
    assert s.decide("a", 1, 8, {"accuracy": 0.9, "params": 10}) == GO
    assert s.decide("b", 1, 8, {"accuracy": 0.1, "params": 1000}) == GO  # 2 < min_trials
    assert s.decide("c", 1, 8, {"accuracy": 0.5}) == GO  # params unknown: not ranked
    assert len(s.recorded[1]) == 2
    assert s.decide("d", 1, 8, {"accuracy": 0.2, "params": 500}) == STOP  # dominated by "a", 3 at the rung


def test_single_objective_pruner_needs_a_single_objective():
    with pytest.raises(Exception, match="search.pruner: median is an Optuna pruner"):
        parse_config({"search": {"pruner": "median"}})
    parse_config({"search": {"pruner": "median"}, "objectives": {"accuracy": "max"}})


def _study(tmp_path, name, **overrides):
    path = small_study(
        tmp_path,
        name,
        **{
            "student.family": "cnn",
            "student.cnn.width_mult": {"low": 0.25, "high": 1.0, "step": 0.25},
            "train.epochs": 6,
            "train.lr": {"low": 1e-4, "high": 3e-2, "log": True},  # some trials learn slowly: something to stop
            "search.trials": 10,
            "search.sampler": "random",
            **overrides,
        },
    )
    run = run_cli("search", path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / name
    storage = f"sqlite:///{results / 'study.db'}"
    return results, optuna.load_study(study_name=name, storage=storage).get_trials(), run.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    "pruner, objectives, reason",
    [
        # params, not latency: a measured latency varies run to run, and with it which trial dominates which at a rung
        ("pareto", {"accuracy": "max", "params": "min"}, "stopped by the pareto scheduler at epoch"),
        # slow: the same bookkeeping as pareto's; every Optuna pruner is driven through the scheduler below
        pytest.param("median", {"accuracy": "max"}, "stopped by Optuna's median pruner at epoch", marks=pytest.mark.slow),
    ],
)
def test_stopped_trials_are_pruned_with_reason_and_curve_and_stay_off_the_front(tmp_path, pruner, objectives, reason):
    results, trials, stdout = _study(
        tmp_path,
        f"stop_{pruner}",
        **{"search.pruner": pruner, "objectives": objectives, "search.early_stopping": {"grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 2}},
    )
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 10 and "FAIL" not in states
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, "nothing was stopped"
    for t in pruned:
        assert reason in t.user_attrs["fail_reason"]
        curve = t.user_attrs["accuracy_curve"]
        assert 1 <= len(curve) < 6  # stopped before its last epoch, every epoch it ran is on the curve
        if pruner == "pareto":
            assert t.values is None  # no low-fidelity accuracy was told as an objective value
        else:  # Optuna itself keeps a pruned trial's last intermediate value (its state stays PRUNED)
            assert len(t.intermediate_values) == len(curve) and t.values == [curve[-1]]
    table = pd.read_csv(results / "trials.csv")
    front = pd.read_csv(results / "pareto.csv")
    assert set(front["number"]) <= set(table[table["state"] == "COMPLETE"]["number"])
    assert not set(front["number"]) & {t.number for t in pruned}
    summary = json.loads((results / "study.json").read_text())
    assert summary["trials"]["PRUNED"] == len(pruned)
    assert "pruned" in stdout


@pytest.mark.integration
def test_epoch_budget_ends_the_study_at_equal_compute(tmp_path):
    results, trials, stdout = _study(
        tmp_path,
        "budget",
        **{
            "train.epochs": 3,
            "search.trials": 50,
            "search.epoch_budget": 10,
            "search.pruner": "asha",
            "search.early_stopping": {"grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 2},
        },
    )
    summary = json.loads((results / "study.json").read_text())
    table = pd.read_csv(results / "trials.csv")
    spent = summary["epochs_spent"]
    assert 10 <= spent <= 11  # a result already on its way when the budget ran out may add one
    assert table["epochs_done"].sum() == spent  # stopped trials' epochs count too
    assert len(trials) < 50 and "FAIL" not in {t.state.name for t in trials}
    assert table["study_epochs"].max() == spent
    cut = [t for t in trials if "epoch budget" in t.user_attrs.get("fail_reason", "")]
    for t in cut:  # running when the budget ran out
        assert t.state.name == "PRUNED" and t.user_attrs["study_epochs"] == spent
    assert "until 10 student-epochs are spent" in stdout
    history = summary["hypervolume_history"]
    assert [h["study_epochs"] for h in history] == sorted(h["study_epochs"] for h in history)


class _Searcher:
    """What the Optuna-pruner scheduler asks of the searcher: the live Optuna trial of a Ray trial."""

    def __init__(self):
        self.live = {}

    def live_trial(self, trial_id):
        return self.live.get(trial_id)


class _RayTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _run_curve(scheduler, searcher, study, trial_id, curve):
    """Report ``curve`` epoch by epoch; the epoch the scheduler stops at (None: it ran all)."""
    searcher.live[trial_id] = optuna_trial = study.ask()
    for epoch, accuracy in enumerate(curve, start=1):
        if scheduler.on_trial_result(None, _RayTrial(trial_id), {"epoch": epoch, "accuracy": accuracy}) == STOP:
            study.tell(optuna_trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(optuna_trial, curve[-1])
    return None


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband", "wilcoxon"])
def test_each_optuna_pruner_stops_a_hopeless_curve_and_spares_a_good_one(pruner):
    """Every Optuna pruner, driven through the scheduler on learning curves of 10 epochs:
    after five ordinary trials, a curve far below them all is stopped before its end, with
    the reason, and a curve above them all is not stopped."""
    from autodistill.tune.schedulers import make_scheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = parse_config(
        {
            "objectives": {"accuracy": "max"},
            "search": {"pruner": pruner, "early_stopping": {"grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 2}},
        }
    )
    searcher, reasons = _Searcher(), {}
    scheduler = make_scheduler(config.search, config.objectives, 10, searcher, reasons, quality="accuracy")
    # named: Hyperband puts each trial in a bracket by a hash of the study's name and the trial's
    # number, and an unnamed study's name is random (a hopeless trial alone in its bracket once
    # went unstopped in CI)
    study = optuna.create_study(study_name="pruners", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=scheduler.pruner)
    ordinary = [[0.5 + 0.04 * e + 0.01 * k for e in range(10)] for k in range(5)]  # (trial, epoch): 0.50 ... 0.90
    for k, curve in enumerate(ordinary):
        _run_curve(scheduler, searcher, study, f"ordinary{k}", curve)
    good = _run_curve(scheduler, searcher, study, "good", [0.7 + 0.03 * e for e in range(10)])
    hopeless = _run_curve(scheduler, searcher, study, "hopeless", [0.1] * 10)
    assert good is None and "good" not in reasons
    assert hopeless is not None and hopeless < 10 and reasons["hopeless"] == f"stopped by Optuna's {pruner} pruner at epoch {hopeless}"


@pytest.mark.integration
def test_time_budget_ends_the_study_and_prunes_the_running_trials(tmp_path):
    """``--time-budget``: no trial starts after it, the running ones stop as PRUNED ("stopped
    by the time budget"), the study ends normally with what finished."""
    path = small_study(tmp_path, "budget", **{"train.epochs": 60, "search.trials": 40, "search.sampler": "random"})
    run = run_cli("search", path, "--time-budget", "6")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'results' / 'budget' / 'study.db'}"
    trials = optuna.load_study(study_name="budget", storage=storage).get_trials()
    states = [t.state.name for t in trials]
    assert len(trials) < 40 and "RUNNING" not in states and "FAIL" not in states
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["fail_reason"].startswith("stopped by the time budget") for t in pruned)
    for t in pruned:  # stopped mid-way, or after its last epoch but before Ray had its checkpoint (a fast machine)
        if len(t.user_attrs["accuracy_curve"]) == 60:
            assert t.user_attrs["fail_reason"] == "stopped by the time budget after its last epoch (60), before its checkpoint was kept"
            assert not (tmp_path / "results" / "budget" / "trials" / f"{t.number:04d}").exists()
        else:
            assert len(t.user_attrs["accuracy_curve"]) < 60
    summary = json.loads((tmp_path / "results" / "budget" / "study.json").read_text())
    assert summary["trials"].get("PRUNED") == len(pruned)
