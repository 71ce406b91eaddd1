"""search.prescreen: flash distillation of random students before the search; the best of
them are the first trials, and its epochs count in the budget."""

import json

import optuna
import pandas as pd
import pytest
import yaml
from helpers import check_one_line_error, run_cli, small_study
from typer.testing import CliRunner

from autodistill.cli import app
from autodistill.loading import load_config
from autodistill.space import search_space
from autodistill.tune.prescreen import candidates, select

OBJECTIVES = {"accuracy": "max", "params": "min"}


def test_selection_takes_whole_fronts_then_the_most_accurate():
    rows = [
        {"accuracy": 0.90, "params": 1000, "fail_reason": None},  # front 0
        {"accuracy": 0.95, "params": 5000, "fail_reason": None},  # front 0
        {"accuracy": 0.85, "params": 2000, "fail_reason": None},  # dominated by 0: front 1
        {"accuracy": 0.93, "params": 9000, "fail_reason": None},  # dominated by 1: front 1
        {"accuracy": 0.99, "params": 100, "fail_reason": "infeasible before training: params 100 < min 500"},  # never chosen
        {"accuracy": 0.80, "params": 9500, "fail_reason": None},  # front 2
    ]
    assert select(rows, OBJECTIVES, "accuracy", 2) == [1, 0]  # the front, most accurate first
    assert select(rows, OBJECTIVES, "accuracy", 3) == [1, 0, 3]  # the next front, cut by accuracy
    assert select(rows, OBJECTIVES, "accuracy", 10) == [1, 0, 3, 2, 5]
    assert select([{"accuracy": float("nan"), "params": 1, "fail_reason": None}], OBJECTIVES, "accuracy", 1) == []


def test_candidates_are_distinct_seeded_and_in_the_space(tmp_path):
    config = load_config(small_study(tmp_path, **{"search.seed": 3}))
    space = search_space(config)
    first, again = candidates(config, space, 8), candidates(config, space, 8)
    assert first == again and len({repr(sorted(p.items())) for p in first}) == 8
    names = {d.name for d in space}
    for point in first:
        assert set(point) <= names
        family = point["student.family"]
        assert all(not n.startswith("student.") or n == "student.family" or n.startswith(f"student.{family}.") for n in point)
    other = load_config(small_study(tmp_path, name="other", **{"search.seed": 4}))
    assert candidates(other, search_space(other), 8) != first


@pytest.mark.parametrize(
    "prescreen, extra, expected",
    [
        ({"candidates": 4, "keep": 5, "epochs": 1}, {}, "search.prescreen.keep (5) is more than search.prescreen.candidates (4)"),
        ({"candidates": 4, "keep": 2, "epochs": 3}, {}, "search.prescreen.epochs (3) must be fewer than train.epochs (3)"),
        ({"candidates": 4, "keep": 2, "epochs": 1}, {"compress.prune_rate": 0.5}, "search.prescreen does not work with compress yet"),
        ({"candidates": 1}, {}, "search.prescreen.candidates"),
    ],
)
def test_bad_prescreen_is_one_line(tmp_path, prescreen, extra, expected):
    path = small_study(tmp_path, **{"search.prescreen": prescreen, **extra})
    check_one_line_error(CliRunner().invoke(app, ["validate", str(path)]), expected, tmp_path)


@pytest.mark.integration
@pytest.mark.slow  # search.prescreen is off by default (issue 18's benchmark has not made it the default)
def test_prescreened_students_start_the_search_and_count_in_the_budget(tmp_path):
    path = small_study(
        tmp_path,
        "pre",
        **{"search.prescreen": {"candidates": 5, "epochs": 1, "keep": 2}, "search.trials": 3, "objectives": OBJECTIVES},
    )
    run = run_cli("search", path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / "pre"
    record = json.loads((results / "prescreen.json").read_text())
    assert record["candidates"] == 5 and len(record["rows"]) == 5 and record["student_epochs"] == 5
    assert all(r["flash_epochs"] == 1 and 0 < r["accuracy"] <= 1 for r in record["rows"])
    chosen = [record["rows"][i]["point"] for i in record["chosen"]]
    assert len(chosen) == 2
    study = optuna.load_study(study_name="pre", storage=f"sqlite:///{results / 'study.db'}")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.params for t in trials[:2]] == chosen  # the first trials are the chosen, in rank order
    assert study.user_attrs["prescreen_epochs"] == 5
    summary = json.loads((results / "study.json").read_text())
    table = pd.read_csv(results / "trials.csv")
    assert summary["epochs_spent"] == 5 + table["epochs_done"].sum()
    assert table["study_epochs"].min() > 5  # every trial's compute includes the pre-screen's
    assert "pre-screen: 5 candidate students" in run.stdout and "pre-screen: 2 students enqueued" in run.stdout

    before = (results / "prescreen.json").stat().st_mtime_ns
    again = run_cli("resume", results, "--trials", "4")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "pre-screen" not in again.stdout and (results / "prescreen.json").stat().st_mtime_ns == before
    assert len(optuna.load_study(study_name="pre", storage=f"sqlite:///{results / 'study.db'}").get_trials()) == 7  # --trials on resume adds trials
    assert yaml.safe_load((results / "config.yaml").read_text())["search"]["prescreen"]["keep"] == 2
