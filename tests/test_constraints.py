"""Constraints and samplers: Optuna's constraint values by hand, and a real study in which
a student whose cost breaks a bound is not trained, known configurations run first, and only
feasible trials make the front."""

import json

import optuna
import pandas as pd
import pytest
from helpers import run_cli, small_study

from autodistill.config import parse_config
from autodistill.constraints import constraint_values, feasible, violations


def test_constraint_values_follow_optunas_convention():
    bounds = parse_config({"constraints": {"params": {"max": 1000}, "accuracy": {"min": 0.9, "max": 0.99}}}).constraints
    # by bound: accuracy <= 0.99, accuracy >= 0.9, params <= 1000; > 0 is a violation
    values = constraint_values(bounds, {"params": 1200, "accuracy": 0.95})
    assert values == pytest.approx({"accuracy.max": 0.95 - 0.99, "accuracy.min": 0.9 - 0.95, "params.max": 200.0})
    assert constraint_values(bounds, {"accuracy": float("nan")})["params.max"] == 1e9  # a missing metric is no proof
    assert violations(bounds, {"params": 1200, "accuracy": 0.85}) == "accuracy 0.85 < min 0.9, params 1,200 > max 1000"
    assert violations(bounds, {"params": 10, "accuracy": 0.95}) == ""
    frame = pd.DataFrame({"params": [10, 1200, 10], "accuracy": [0.95, 0.95, float("nan")]})
    assert list(feasible(frame, bounds)) == [True, False, False]  # a missing metric is no proof


@pytest.mark.integration
def test_study_with_constraints_points_and_gp(tmp_path):
    path = small_study(
        tmp_path,
        "bounded",
        **{
            "student.family": "cnn",
            "student.cnn.width_mult": {"low": 0.25, "high": 1.0, "step": 0.25},  # 398, 590, 1698, 2034 params
            "constraints": {"params": {"max": 1000}, "accuracy": {"min": 0.2}},
            "search.sampler": "gp",
            "search.trials": 6,
            "search.points_to_evaluate": [
                {"student.cnn.width_mult": 1.0, "distill.alpha": 0.9, "distill.temperature.schedule": "constant"},
                {"student.cnn.width_mult": 0.5, "distill.alpha": 0.9},
            ],
        },
    )
    run = run_cli("search", path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / "bounded"
    trials = optuna.load_study(study_name="bounded", storage=f"sqlite:///{results / 'study.db'}").get_trials()
    assert len(trials) == 6
    first, second = trials[0], trials[1]
    assert first.params["student.cnn.width_mult"] == 1.0 and first.params["distill.alpha"] == 0.9  # the given points, in order
    assert second.params["student.cnn.width_mult"] == 0.5
    # 2,034 params > 1,000: recorded without training
    assert first.state.name == "PRUNED" and first.user_attrs["infeasible"]
    assert first.user_attrs["fail_reason"] == "infeasible before training: params 2,034 > max 1000"
    assert first.user_attrs.get("accuracy_curve", []) == [] and "accuracy" not in first.user_attrs
    assert second.state.name == "COMPLETE"
    for t in trials:
        if t.user_attrs.get("params", 0) > 1000:
            assert t.state.name == "PRUNED" and t.user_attrs["infeasible"]
    # what the samplers read (Trial.set_constraint): one value per bound, > 0 when broken
    assert first.constraints["params.max"] == 2034 - 1000 and set(first.constraints) == {"params.max", "accuracy.min"}
    assert second.constraints["params.max"] < 0 and second.constraints["accuracy.min"] == pytest.approx(0.2 - second.user_attrs["accuracy"])
    table = pd.read_csv(results / "trials.csv")
    front = pd.read_csv(results / "pareto.csv")
    feasible_numbers = set(table[table["feasible"]]["number"])
    assert set(front["number"]) <= feasible_numbers
    assert (table[table["feasible"]]["params"] <= 1000).all() and (table[table["feasible"]]["accuracy"] >= 0.2).all()
    assert json.loads((results / "study.json").read_text())["trials"]["PRUNED"] >= 1
