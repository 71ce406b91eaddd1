"""search.startup: spread / spread_students: the sampler's start-up trials cover the space's
costs (cheapest, dearest, then between), chosen without training."""

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import check_one_line_error, run_cli, small_study
from typer.testing import CliRunner

from autodistill.cli import app
from autodistill.loading import load_config
from autodistill.space import resolve, search_space
from autodistill.tasks import get_task
from autodistill.tune.runner import startup_trials
from autodistill.tune.startup import architecture_key, cost_metric, latin_recipes, middle_recipe, run_spread, spread

OBJECTIVES = {"accuracy": "max", "params": "min"}


def test_spread_covers_the_log_range_in_an_anytime_order():
    costs = [80_000, 1_000, 5_000, 1_100, 20_000, 80_000]
    # targets 1,000, 8,944 and 80,000 (even in log): the nearest are 1,000, 5,000 (log gap
    # 0.58 against 0.80 for 20,000) and the first of the two 80,000s; run cheapest, dearest, then between
    assert spread(costs, 3) == [1, 0, 2]
    assert spread(costs, 1) == [1]
    assert spread(costs, 0) == [] and spread([], 3) == []
    # more asked than there are: each once; after the two ends, each time the one farthest
    # from those before it (5,000: 1.61 from 1,000; then 20,000: 1.39; then 1,100; the second 80,000 last)
    assert spread(costs, 10) == [1, 0, 2, 4, 3, 5]
    # close targets do not take the same entry twice
    assert spread([1.0, 2.0, 1000.0], 3) == [0, 2, 1]
    # a study stopped after any number of them has seen the range: 8 doublings
    assert spread([1000 * 2**i for i in range(8)], 8) == [0, 7, 3, 5, 1, 2, 4, 6]


def test_recipes_lie_on_a_latin_hypercube(tmp_path):
    config = load_config(small_study(tmp_path, **{"distill.temperature.start": {"low": 1.0, "high": 8.0, "step": 0.5}}))
    space = search_space(config)
    recipes = latin_recipes(space, 4, np.random.default_rng(0))
    assert recipes == latin_recipes(space, 4, np.random.default_rng(0)) and len(recipes) == 4
    names = {d.name for d in space if not d.name.startswith("student.")}
    assert all(set(r) == names for r in recipes)  # the recipe only: the architecture comes from the spread
    lr = sorted(math.log(r["train.lr"] / 3e-3) / math.log(1e-2 / 3e-3) for r in recipes)  # log scale, 0-1
    assert [int(q * 4) for q in lr] == [0, 1, 2, 3]  # one value in each quarter
    alpha = sorted((r["distill.alpha"] - 0.3) / 0.6 for r in recipes)
    assert [int(q * 4) for q in alpha] == [0, 1, 2, 3]
    assert all(r["distill.temperature.start"] * 2 == round(r["distill.temperature.start"] * 2) for r in recipes)  # on its step grid
    assert sorted(r["distill.temperature.schedule"] for r in recipes) == ["constant", "constant", "cosine", "cosine"]  # each choice as often


def test_the_middle_recipe_is_each_range_s_middle(tmp_path):
    config = load_config(
        small_study(tmp_path, **{"distill.temperature.start": {"low": 1.0, "high": 8.0, "step": 0.5}, "train.batch_size": {"choice": [32, 64, 128]}})
    )
    recipe = middle_recipe(search_space(config))
    assert set(recipe) == {"distill.alpha", "distill.temperature.schedule", "distill.temperature.start", "train.lr", "train.batch_size"}
    assert recipe["distill.alpha"] == pytest.approx(0.6)  # 0.3-0.9
    assert recipe["train.lr"] == pytest.approx(math.sqrt(3e-3 * 1e-2))  # a log range: its geometric middle
    assert recipe["distill.temperature.start"] == 4.5  # 1-8 on a grid of 0.5
    assert recipe["train.batch_size"] == 64  # the middle of three options
    assert recipe["distill.temperature.schedule"] == "constant"  # of two, the first (the plain one a study file lists first)
    config = load_config(small_study(tmp_path, "four", **{"train.batch_size": {"choice": [16, 32, 64, 128]}}))
    assert middle_recipe(search_space(config))["train.batch_size"] == 32  # of four, the earlier middle one


def test_spread_students_picks_spread_s_students_with_one_recipe(tmp_path):
    """The same students as ``spread`` for the same seed, in the same order; only the recipes
    differ: all the middle one instead of a Latin hypercube."""
    designs = {}
    for mode in ("spread", "spread_students"):
        config = load_config(small_study(tmp_path, mode, **{"search.startup": mode, "objectives": OBJECTIVES}))
        task = get_task(config.task)
        space = search_space(config)
        study = optuna.create_study(directions=["maximize", "minimize"])
        lines = []
        record = run_spread(config, task, task.load_data(config), None, space, study, 4, lines.append)
        assert study.user_attrs["startup_design"] == record and len(record["chosen"]) == 4
        assert [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)] == [c["point"] for c in record["chosen"]]  # enqueued in order
        designs[mode] = (record, lines[0])
    (spread_design, spread_line), (students, students_line) = designs["spread"], designs["spread_students"]
    assert [architecture_key(c["point"]) for c in students["chosen"]] == [architecture_key(c["point"]) for c in spread_design["chosen"]]
    middle = middle_recipe(space)
    assert all({k: c["point"][k] for k in middle} == middle for c in students["chosen"])
    assert len({c["point"]["distill.alpha"] for c in spread_design["chosen"]}) == 4  # spread's recipes differ
    assert students_line.startswith("start-up: 4 students spread over params") and "each with the middle recipe" in students_line
    assert "middle recipe" not in spread_line


def test_the_cost_is_the_first_cost_objective_else_macs():
    costs = {"params": 10.0, "macs": 100.0, "size_mb": 0.1}
    assert cost_metric({"accuracy": "max", "size_mb": "min", "params": "min"}, costs) == "size_mb"
    assert cost_metric({"accuracy": "max", "latency_ms": "min"}, costs) == "macs"
    assert cost_metric({"accuracy": "max"}, {"params": 3.0}) == "params"


def test_architecture_key_ignores_the_recipe():
    a = {"student.family": "cnn", "student.cnn.width_mult": 0.5, "distill.alpha": 0.3, "train.lr": 0.01}
    b = {**a, "distill.alpha": 0.9, "train.lr": 0.002}
    assert architecture_key(a) == architecture_key(b)
    assert architecture_key(a) != architecture_key({**a, "student.cnn.width_mult": 0.75})


def test_spread_with_a_prescreen_is_one_line(tmp_path):
    path = small_study(tmp_path, **{"search.startup": "spread", "search.prescreen": {"candidates": 4, "keep": 2, "epochs": 1}})
    check_one_line_error(CliRunner().invoke(app, ["validate", str(path)]), "search.startup: spread and search.prescreen both choose the first trials", tmp_path)
    path = small_study(tmp_path, "students", **{"search.startup": "spread_students", "search.prescreen": {"candidates": 4, "keep": 2, "epochs": 1}})
    check_one_line_error(CliRunner().invoke(app, ["validate", str(path)]), "search.startup: spread_students and search.prescreen", tmp_path)
    bad = small_study(tmp_path, name="bad", **{"search.startup": "latin"})
    check_one_line_error(CliRunner().invoke(app, ["validate", str(bad)]), "search.startup", tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["spread", "spread_students"])
def test_spread_start_up_trials_span_the_space_and_are_not_redrawn_on_resume(tmp_path, mode):
    path = small_study(tmp_path, "spread", **{"search.startup": mode, "search.trials": 5, "objectives": OBJECTIVES})
    config = load_config(path)
    k = startup_trials(config)
    assert k == 4
    # every architecture of the small space (cnn at 3 widths, mobilenet at 2 expand ratios) and its params
    task = get_task(config.task)
    data = task.load_data(config)
    archs = [{"student.family": "cnn", "student.cnn.width_mult": w} for w in (0.5, 0.75, 1.0)]
    archs += [{"student.family": "mobilenet", "student.mobilenet.expand_ratio": e} for e in (2, 3)]
    recipe = {"distill.alpha": 0.5, "distill.temperature.schedule": "constant", "train.lr": 0.005}
    params = sorted(task.start_trial(resolve(config, {**a, **recipe}), config, data, None, 0).costs()["params"] for a in archs)

    run = run_cli("search", path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / "spread"
    study = optuna.load_study(study_name="spread", storage=f"sqlite:///{results / 'study.db'}")
    design = study.user_attrs["startup_design"]
    assert design["cost"] == "params" and design["architectures"] == 5 and len(design["chosen"]) == k
    chosen = [c["params"] for c in design["chosen"]]
    assert len(set(chosen)) == k  # distinct architectures
    assert chosen[:2] == [params[0], params[-1]]  # the cheapest first, the dearest next
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.params for t in trials[:k]] == [c["point"] for c in design["chosen"]]  # the first trials are the design, in order
    table = pd.read_csv(results / "trials.csv").sort_values("number")
    assert list(table["params"][:k]) == chosen
    assert "start-up: 4 students spread over params" in run.stdout
    if mode == "spread_students":  # one recipe for all: the middle of each range
        assert "each with the middle recipe" in run.stdout
        assert all(t.params["distill.alpha"] == pytest.approx(0.6) and t.params["train.lr"] == pytest.approx(math.sqrt(3e-5)) for t in trials[:k])
        return  # resume takes the same path for both (the startup_design attribute): checked once, with spread

    # the study's latency clock (measure.time_runs): taken by its first run, kept for its resume
    clock = study.user_attrs["latency_clock_ms"]
    assert 0.001 < clock < 10 and json.loads((results / "study.json").read_text())["latency_clock_ms"] == clock
    assert clock in json.loads((results.parent / ".clock.json").read_text()).values()  # the results folder's fastest
    study.set_user_attr("latency_clock_ms", clock * 50)  # as if the first run had taken it at 1/50 of the speed

    again = run_cli("resume", results, "--trials", "1")  # one more trial
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # the resumed driver hands the stored clock to its trial: its latency is in that unit
    latency = pd.read_csv(results / "trials.csv").set_index("number")["latency_ms"]
    assert latency.loc[5] > 10 * latency.loc[0:4].max()
    assert json.loads((results / "study.json").read_text())["latency_clock_ms"] == clock * 50
    assert "start-up:" not in again.stdout
    assert "request: 5 + 1 = 6 trials" in again.stdout and "[6/6] trial" in again.stdout  # a finished study extended
    study = optuna.load_study(study_name="spread", storage=f"sqlite:///{results / 'study.db'}")
    assert study.user_attrs["startup_design"] == design and len(study.get_trials()) == 6
