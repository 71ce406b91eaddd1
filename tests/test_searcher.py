"""The searcher's outcome mapping, on a real Optuna study in real sqlite storage."""

from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import yaml

from autodistill import parse_config
from autodistill.space import search_space
from autodistill.tasks import get_task
from autodistill.tune.searcher import OptunaSearcher

OBJECTIVES = {"accuracy": "max", "params": "min"}
TASK = get_task("image_classification")


@pytest.fixture
def searcher(tmp_path):
    cfg = parse_config({"train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    return OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=5, task=TASK), study


def finished(**extra):
    return {"accuracy": 0.9, "params": 1000, "latency_ms": 0.3, "epoch": 3, "finished": True, **extra}


def test_completed_trial_is_told_its_objectives(searcher):
    s, study = searcher
    config = s.suggest("a")
    assert set(config) == {"number", "params", "seed_number"} and "train.lr" in config["params"]
    s.on_trial_result("a", {"accuracy": 0.5, "epoch": 1})
    s.on_trial_complete("a", finished())
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert t.values == [0.9, 1000]
    assert t.user_attrs["accuracy_curve"] == [0.5, 0.9]
    assert t.user_attrs["latency_ms"] == 0.3


def test_batched_reports_keep_every_epoch_of_the_curve_and_the_epoch_count(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_result("a", {"accuracy": 0.3, "epoch": 3, "curve_tail": [0.1, 0.2, 0.3]})  # epochs 1-3 in one report
    s.on_trial_result("a", {"accuracy": 0.5, "epoch": 5, "curve_tail": [0.4, 0.5]})
    assert study.get_trials()[0].user_attrs["accuracy_curve"] == [0.1, 0.2, 0.3, 0.4, 0.5]  # live, for the dashboard
    s.on_trial_complete("a", finished(epoch=7, curve_tail=[0.8, 0.9]))
    (t,) = study.get_trials()
    assert t.user_attrs["accuracy_curve"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9]
    assert s.epochs_spent == 7


def test_failed_trial_keeps_its_reason(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_complete("a", {"failed": True, "fail_reason": "TrialDiverged: loss became nan at epoch 2, step 9"})
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.FAIL
    assert t.user_attrs["fail_reason"].startswith("TrialDiverged: loss became nan")


def test_worker_crash_is_a_failure(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_complete("a", None, error=True)
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.FAIL
    assert t.user_attrs["fail_reason"].startswith("the trial's worker failed")


def test_trial_stopped_before_reporting_is_pruned(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_complete("a", None)
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.PRUNED


def test_stopped_trial_is_pruned_not_complete(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_complete("a", {"accuracy": 0.4, "params": 1000, "epoch": 2})  # no "finished"
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.values is None


def test_non_finite_objective_is_a_failure(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_complete("a", finished(accuracy=float("nan")))
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.FAIL
    assert "accuracy" in t.user_attrs["fail_reason"]


def test_finishes_after_max_trials_and_pickles(searcher):
    import pickle

    s, _ = searcher
    configs = [s.suggest(str(i)) for i in range(6)]
    assert configs[-1] == "FINISHED"
    assert [c["number"] for c in configs[:5]] == [0, 1, 2, 3, 4]
    pickle.dumps(s)  # Ray stores the searcher with the experiment


def test_trials_still_running_at_the_end_are_pruned_with_their_curve(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_result("a", {"accuracy": 0.3, "params": 1000, "epoch": 1})
    s.on_trial_result("a", {"accuracy": 0.6, "params": 1000, "epoch": 2})
    s.stop_reason = "stopped by the time budget"
    (outcome,) = s.close_live()
    assert outcome.state == "PRUNED"
    assert outcome.reason == "stopped by the time budget after epoch 2"
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.user_attrs["accuracy_curve"] == [0.3, 0.6]
    assert s.close_live() == []


def test_a_trial_stopped_between_its_last_epoch_and_its_checkpoint_says_so(searcher):
    # a fast machine: the time budget came after the final report, before Ray had the checkpoint
    s, study = searcher
    s.suggest("a")
    s.on_trial_result("a", {"accuracy": 0.6, "params": 1000, "epoch": 3, "epochs": 3, "finished": True})
    s.stop_reason = "stopped by the time budget"
    (outcome,) = s.close_live()
    assert outcome.state == "PRUNED"
    assert outcome.reason == "stopped by the time budget after its last epoch (3), before its checkpoint was kept"
    assert s.close_live() == []


def test_curve_is_stored_as_it_grows(searcher):
    s, study = searcher
    s.suggest("a")
    s.on_trial_result("a", {"accuracy": 0.5, "epoch": 1})
    s.on_trial_result("a", {"accuracy": 0.6, "epoch": 2})
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.RUNNING
    assert t.user_attrs["accuracy_curve"] == [0.5, 0.6]


def test_interrupted_trial_is_failed_then_retried_from_its_checkpoint(tmp_path):
    import torch

    from autodistill.tune.resume import counted, recover

    cfg = parse_config({"train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    inflight = tmp_path / "inflight"
    s = OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=3, task=TASK, inflight_dir=inflight)
    s.suggest("a")
    live, killed = s.suggest("b"), s.suggest("c")
    assert live["inflight"] == str(inflight / "0001.pt")
    s.on_trial_complete("a", finished())
    s.on_trial_result("b", {"accuracy": 0.4, "epoch": 1})
    inflight.mkdir()
    torch.save({"epoch": 1}, inflight / "0001.pt")
    s.interrupted = True  # Ctrl-C: b is recorded as interrupted; c stays RUNNING as after a SIGKILL
    outcome = s.on_trial_complete("b", {"accuracy": 0.4, "epoch": 1})
    assert outcome.state == "FAIL" and outcome.interrupted and "interrupted" in outcome.reason
    assert (inflight / "0001.pt").exists()  # kept for the retry

    rec = recover(study, inflight, TASK.quality, log=lambda m: None)
    assert rec.counted == 1 and rec.failed_stale == [killed["number"]]
    assert rec.retries == {live["number"]: 1, killed["number"]: None}
    assert sum(counted(t) for t in study.get_trials()) == 1
    assert recover(study, inflight, TASK.quality, log=lambda m: None).retries == {}  # retried once, not twice

    s2 = OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=2, task=TASK, inflight_dir=inflight)
    retry = s2.suggest("d")
    assert retry["continues"] == live["number"] and retry["resume_from"] == str(inflight / "0001.pt")
    assert retry["params"] == live["params"] and retry["seed_number"] == live["seed_number"]
    assert s2.suggest("e")["continues"] == killed["number"]
    s2.on_trial_result("d", {"accuracy": 0.5, "epoch": 2, "prior_curve": [0.4]})
    s2.on_trial_complete("d", finished())
    t = study.trials[retry["number"]]
    assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["accuracy_curve"] == [0.4, 0.5, 0.9]
    assert not (inflight / "0001.pt").exists()  # continued and finished: no longer needed


def test_a_trial_killed_while_its_parameters_were_sampled_is_not_retried(tmp_path):
    """SIGKILL between Optuna's ask and the last suggest: the trial holds some or none of its
    parameters and never reached Ray. It is failed, not continued; a retry killed that way
    does not stand for the trial it continued, which is retried again."""
    from autodistill.tune.resume import recover

    cfg = parse_config({"train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    inflight = tmp_path / "inflight"
    s = OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=3, task=TASK, inflight_dir=inflight)
    ran = s.suggest("a")  # handed to Ray, then the driver was killed
    half = study.ask()  # the driver was killed inside suggest(): no ray_trial_id, no parameters
    rec = recover(study, inflight, TASK.quality, log=lambda m: None)
    assert rec.failed_stale == [ran["number"], half.number] and rec.retries == {ran["number"]: None}
    (t,) = [t for t in study.get_trials() if t.number == half.number]
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"]
    assert "before it started: its parameters were being sampled" in t.user_attrs["fail_reason"]

    s2 = OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=2, task=TASK, inflight_dir=inflight)
    study.ask()  # the retry of `ran` is asked, and the driver is killed again before it reached Ray
    rec = recover(study, inflight, TASK.quality, log=lambda m: None)
    assert rec.retries == {ran["number"]: None}  # `ran` is retried again, with its parameters
    retry = s2.suggest("b")
    assert retry["continues"] == ran["number"] and retry["params"] == ran["params"]
    s2.on_trial_complete("b", finished())
    assert recover(study, inflight, TASK.quality, log=lambda m: None).retries == {}


@pytest.mark.integration
def test_epochs_are_counted_once_and_the_budget_ends_the_search(tmp_path):
    from autodistill.tune.searcher import epochs_spent

    cfg = parse_config({"train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    s = OptunaSearcher(study, search_space(cfg), OBJECTIVES, max_trials=10, task=TASK, epoch_budget=7)
    s.suggest("a"), s.suggest("b")
    for epoch in (1, 2):
        s.on_trial_result("a", {"accuracy": 0.5, "epoch": epoch})
    s.on_trial_complete("a", finished())  # the last result comes only here: epoch 3 counts once
    assert s.epochs_spent == 3
    # b continues an interrupted trial from its epoch 2: those two epochs were the other trial's
    s.on_trial_result("b", {"accuracy": 0.5, "epoch": 3, "resumed_epoch": 2, "prior_curve": [0.3, 0.4]})
    s.on_trial_result("b", {"accuracy": 0.6, "epoch": 3, "resumed_epoch": 2})  # the same epoch again (a restart) is not new compute
    s.on_trial_result("b", {"accuracy": 0.7, "epoch": 4, "resumed_epoch": 2})
    assert s.epochs_spent == 5 and not s.budget_spent()
    s.suggest("c")
    s.on_trial_result("c", {"accuracy": 0.5, "epoch": 1})
    s.on_trial_result("c", {"accuracy": 0.5, "epoch": 2})
    assert s.epochs_spent == 7 and s.budget_spent()
    assert s.suggest("d") == "FINISHED"  # the budget, not max_trials, ends it
    s.stop_reason = "stopped by the epoch budget"
    outcomes = {o.number: o for o in s.close_live()}
    assert {o.state for o in outcomes.values()} == {"PRUNED"}
    assert outcomes[2].reason == "stopped by the epoch budget after epoch 2"
    trials = study.get_trials()
    assert [t.user_attrs["study_epochs"] for t in trials] == [3, 7, 7]
    # what a resumed study starts from: b's curve holds 4 epochs, 2 of them the continued trial's
    assert len(trials[1].user_attrs["accuracy_curve"]) == 4 and trials[1].user_attrs["resumed_epoch"] == 2
    assert epochs_spent(study, TASK.quality) == 7


def test_a_trial_cut_after_its_final_result_and_checkpoint_is_complete(searcher):
    """The epoch budget can run out on a trial's last epoch, before Ray saw the trial end."""
    from types import SimpleNamespace

    s, study = searcher
    s.suggest("done"), s.suggest("cut")
    s.on_trial_result("done", finished())
    s.on_trial_result("cut", {**finished(), "epoch": 2, "finished": False})
    s.ray_trials.update(done=SimpleNamespace(checkpoint=object()), cut=SimpleNamespace(checkpoint=None))
    s.stop_reason = "stopped by the epoch budget"
    outcomes = {o.number: o for o in s.close_live()}
    assert outcomes[0].state == "COMPLETE" and outcomes[1].state == "PRUNED"
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "PRUNED"]


def test_a_trial_that_cannot_write_its_checkpoint_is_interrupted_and_stops_the_study(searcher):
    s, study = searcher
    s.suggest("a")
    s.suggest("b")
    s.on_trial_result("a", {"accuracy": 0.5, "epoch": 1})
    reason = "no space left on device while writing results/x/inflight/0000.pt"
    outcome = s.on_trial_complete("a", {"failed": True, "disk_full": True, "fail_reason": reason, "epoch": 1})
    assert outcome.state == "FAIL" and outcome.interrupted and reason in outcome.reason
    assert s.interrupted and str(s.fault) == reason  # the study stops; the driver exits with this line
    s.on_trial_complete("b", {"accuracy": 0.4, "epoch": 1})  # stopped by the study's stop: interrupted too
    trials = {t.number: t for t in study.get_trials()}
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"] for t in trials.values())  # both retried by resume


def test_a_checkpoint_copy_that_finds_the_disk_full_interrupts_the_trial(searcher):
    from autodistill._errors import DiskFull

    s, study = searcher

    def full(trial_id, outcome):
        raise DiskFull("no space left on device while writing results/x/trials/0000")

    s.before_tell = full
    s.suggest("a")
    outcome = s.on_trial_complete("a", finished())
    assert outcome.state == "FAIL" and outcome.interrupted and s.interrupted
    (t,) = study.get_trials()
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["interrupted"] and "trials/0000" in t.user_attrs["fail_reason"]


class _Server:
    """A real sqlite storage that refuses every call once ``down``, as a stopped PostgreSQL does."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            if self.down:
                raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
            return method(*args, **kwargs)

        return call


def _searcher_on_a_server(tmp_path):
    """A searcher whose study lives behind a retrying storage (a 0.05 s window) on a :class:`_Server`."""
    from autodistill import _storage

    server = _Server(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    lines = []
    storage = _storage.retrying(server, "postgresql+psycopg://u@db:5432/x", 0.05, lines.append)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name="s")
    return server, OptunaSearcher(study, search_space(parse_config({})), OBJECTIVES, max_trials=5, task=TASK), lines


def test_a_storage_lost_during_a_curve_write_stops_the_study_without_raising(tmp_path):
    """The storage server goes away while a trial trains: the curve write of its next epoch
    (called from Ray Tune's loop) must not raise, or Ray ends the run with a TuneError rather
    than the one line that names the storage."""
    from autodistill._errors import StorageUnavailable

    server, s, lines = _searcher_on_a_server(tmp_path)
    s.suggest("a")
    s.on_trial_result("a", {"accuracy": 0.5, "epoch": 1})
    server.down = True
    s.on_trial_result("a", {"accuracy": 0.6, "epoch": 2})  # retried for the window, then the study stops
    assert s.interrupted and isinstance(s.fault, StorageUnavailable) and "unreachable" in lines[0]
    # no new trial while the study stops, and FINISHED rather than None: with no trial
    # running, Ray Tune would ask again every second for 600 s before it ends the run
    assert s.suggest("b") == "FINISHED"
    (outcome,) = s.close_live()  # the trial Ray was running: interrupted, for resume
    assert outcome.state == "FAIL" and outcome.interrupted
    server.down = False
    (t,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert t.state == optuna.trial.TrialState.RUNNING and t.user_attrs["accuracy_curve"] == [0.5]  # resume continues it


def _nsga2_params(seed: int) -> list[dict]:
    from autodistill.constraints import constraint_values
    from autodistill.space import resolve, sample
    from autodistill.tune.runner import make_sampler

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "digits.yaml").read_text())
    raw["search"].update(sampler="nsga2", seed=seed)
    config = parse_config({**raw, "constraints": {"params": {"max": 20_000}}})
    sampler = make_sampler(config)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    space, drawn = search_space(config), []
    assert len(space) >= 10
    for i in range(60):  # past the first generation (population 50): the genetic operators run
        trial = study.ask()
        params = sample(trial, space)
        resolve(config, params)  # every sampled point is a valid study
        size = 1000 + 997 * (i % 37)
        for key, value in constraint_values(config.constraints, {"params": size}).items():  # what the searcher stores
            trial.set_constraint(key, value)
        study.tell(trial, [0.5 + 0.01 * (i % 13), size, 0.1 + 0.003 * (i % 7)])
        drawn.append(params)
    feasible = [t for t in study.trials if t.constraints["params.max"] <= 0]
    assert 0 < len(feasible) < len(study.trials)
    return drawn


def test_nsga2_samples_valid_points_with_constraints_and_is_seeded():
    first = _nsga2_params(0)
    assert first == _nsga2_params(0)
    assert first != _nsga2_params(1)


def test_a_storage_lost_while_a_trial_is_asked_for_ends_the_search(tmp_path):
    """The storage goes away when Ray Tune asks for the next trial: the searcher says FINISHED
    (not None, the answer that makes Ray Tune ask again every second for 600 s when no trial
    runs) and the driver exits with the storage's one line."""
    from autodistill._errors import StorageUnavailable

    server, s, lines = _searcher_on_a_server(tmp_path)
    s.suggest("a")
    s.on_trial_complete("a", finished())
    server.down = True
    assert s.suggest("b") == "FINISHED"
    assert s.interrupted and isinstance(s.fault, StorageUnavailable) and s.close_live() == []
    server.down = False
    (t,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert t.state == optuna.trial.TrialState.COMPLETE


def test_the_first_time_no_trial_is_left_it_says_so_once(searcher):
    # the runner starts the report's imports there: a slot stands idle while the last trials run
    s, _ = searcher
    calls = []
    s.when_none_left = lambda: calls.append(len(s._live))
    for i in range(5):
        assert isinstance(s.suggest(f"t{i}"), dict)
    assert calls == []
    s.on_trial_complete("t0", finished())
    assert s.suggest("t5") == s.FINISHED and s.suggest("t6") == s.FINISHED
    assert calls == [4]  # once, with the other four still running


def test_a_failing_no_trial_left_hook_costs_the_trial_nothing(searcher):
    s, study = searcher
    s.when_none_left = lambda: 1 / 0
    for i in range(5):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", finished())
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_an_interrupted_search_says_no_trial_is_left_when_asked_for_one(searcher):
    s, _ = searcher
    calls = []
    s.when_none_left = lambda: calls.append(len(s._live))
    s.suggest("t0")
    s.interrupted = True
    assert s.suggest("t1") == s.FINISHED and calls == [1]


def test_a_trial_that_ends_after_the_last_was_handed_out_says_no_trial_is_left(searcher):
    # Ray Tune asks for no trial beyond num_samples (the trials to run): the first trial to end
    # after the last was handed out frees a slot that nothing will take
    s, _ = searcher
    calls = []
    s.when_none_left = lambda: calls.append(sorted(s._live))
    for i in range(4):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", finished())
    assert calls == []  # a fifth trial is still to come
    s.suggest("t4")
    s.on_trial_complete("t2", finished())
    s.on_trial_complete("t1", finished())
    assert calls == [["t1", "t3", "t4"]]  # once, when t2 ended
