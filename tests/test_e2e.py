"""A real study on digits: real Ray, real Optuna sqlite storage, the real CLI."""

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from helpers import run_cli, run_cli_here, small_study

from autodistill import load_config, load_front, load_trials
from autodistill.students import build_student

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    result = run_cli("search", small_study(tmp_path), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path / "results" / "tiny", result


def test_every_result_file_is_written(study):
    results, _ = study
    for name in ("config.yaml", "study.db", "trials.csv", "pareto.csv", "pareto.png", "report.html", "study.json"):
        assert (results / name).is_file(), name
    assert (results / "ray").is_dir()
    assert (results / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "trials.parquet").is_file()
    # written ahead while the study ran (a commit does not wait for the disk): one file again
    assert not (results / "study.db-wal").exists() and not (results / "study.db-shm").exists()


class _TagBalance(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_report_is_valid_self_contained_html_with_every_plot(study):
    results, _ = study
    html = (results / "report.html").read_text()
    assert html.startswith("<!doctype html>")
    parser = _TagBalance()
    parser.feed(html)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js is inlined: opens offline
    titles = ["Accuracy vs cost", "The front in 3-D", "hypervolume of the front over the study", "completed vs stopped trials"]
    for title in titles:
        assert title in html, title
    # each figure's data is valid JSON handed to Plotly.newPlot
    calls = re.findall(r'Plotly\.newPlot\(\s*"(fig-\d+)",\s*(\[.*?\]),\s*\{', html, flags=re.S)
    assert len(calls) == len(titles)
    for _, data in calls:
        assert isinstance(json.loads(data), list)
    summary = json.loads((results / "study.json").read_text())
    assert len(summary["hypervolume_history"]) == 4
    assert summary["hypervolume_history"][-1]["hypervolume"] == pytest.approx(max(h["hypervolume"] for h in summary["hypervolume_history"]))
    assert summary["importances"] == {}  # 4 trials: too few for fANOVA, and the page says so
    assert "Parameter importances: not computed from 4 completed trial(s); fANOVA needs at least 8." in html


def test_parquet_matches_csv(study):
    results, _ = study
    csv, parquet = load_trials(results), pd.read_parquet(results / "trials.parquet")
    assert list(parquet["number"]) == list(csv["number"]) and list(parquet["state"]) == list(csv["state"])
    assert np.allclose(parquet["accuracy"], csv["accuracy"])


def test_trials_table_and_optuna_storage_agree(study):
    results, _ = study
    trials = load_trials(results)
    assert len(trials) == 4
    assert set(trials["state"]) == {"COMPLETE"}
    assert trials["accuracy"].between(0, 1).all()
    assert (trials["epochs_done"] == 3).all()
    stored = optuna.load_study(study_name="tiny", storage=f"sqlite:///{results / 'study.db'}")
    assert len(stored.trials) == 4
    assert sorted(t.number for t in stored.trials) == sorted(trials["number"])
    for t in stored.trials:
        assert t.values[0] == pytest.approx(t.user_attrs["accuracy"])
        assert len(t.user_attrs["accuracy_curve"]) == 3


def test_front_is_non_dominated_and_re_measured(study):
    results, _ = study
    front = load_front(results)
    trials = load_trials(results)
    assert 1 <= len(front) <= 4
    assert {"latency_ms", "latency_ms_in_trial", "latency_ms_p10", "checkpoint"} <= set(front.columns)
    for _, row in front.iterrows():
        others = front[front["number"] != row["number"]]
        dominated = (others["accuracy"] >= row["accuracy"]) & (others["params"] <= row["params"]) & (others["latency_ms"] <= row["latency_ms"])
        strictly = (others["accuracy"] > row["accuracy"]) | (others["params"] < row["params"]) | (others["latency_ms"] < row["latency_ms"])
        assert not (dominated & strictly).any()
    assert set(front["number"]) <= set(trials["number"])
    summary = json.loads((results / "study.json").read_text())
    assert 0 <= summary["hypervolume"] < 1
    assert summary["teacher"]["metrics"]["params"] > 0
    assert summary["trials"]["COMPLETE"] == 4


def test_checkpoints_rebuild_the_student(study):
    results, _ = study
    trials = load_trials(results)
    for number in trials["number"]:
        folder = results / "trials" / f"{int(number):04d}"
        spec = json.loads((folder / "spec.json").read_text())["spec"]
        model = build_student(spec)
        model.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
        row = trials[trials["number"] == number].iloc[0]
        assert sum(p.numel() for p in model.parameters()) == row["params"]


def test_terminal_output_and_show(study):
    results, result = study
    assert "teacher:" in result.stdout and "validation accuracy" in result.stdout
    assert "Pareto front of tiny" in result.stdout
    assert "[4/4] trial" in result.stdout
    # the README's sample output shows every kind of line a study prints (scripts/sample_output.py regenerates it)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from sample_output import README, line_kind, sample_block

    printed = {k for k in map(line_kind, result.stdout.splitlines()) if k}
    shown_in_readme = {k for k in map(line_kind, sample_block(README.read_text()).splitlines()) if k}
    assert printed <= shown_in_readme, f"the README's sample output lacks {sorted(printed - shown_in_readme)}: run python scripts/sample_output.py"
    shown = run_cli("show", results)
    assert shown.returncode == 0, shown.stderr
    assert "Pareto front of tiny" in shown.stdout and "teacher" in shown.stdout
    front = pd.read_csv(results / "pareto.csv")
    for number in front["number"]:
        assert f" {int(number)} " in shown.stdout


def test_search_refuses_a_directory_that_holds_the_study(study, tmp_path):
    results, _ = study
    config = results.parent.parent / "tiny.yaml"
    again = run_cli("search", config)
    assert again.returncode == 2
    assert "already holds study 'tiny' with 4 trial(s)" in again.stderr and "autodistill resume" in again.stderr
    assert len(load_trials(results)) == 4


def test_resume_of_a_finished_study_runs_nothing(study):
    results, _ = study
    before = (results / "trials.csv").read_text()
    again = run_cli("resume", results)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 of 4 trial(s) already finished; 0 to run" in again.stdout
    assert (results / "trials.csv").read_text() == before


def test_export_knee_round_trip_with_onnxruntime(study, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from autodistill.data import load_dataset
    from autodistill.pareto import as_minimization, knee_index
    from autodistill.tasks.image_classification.export import LOGIT_TOLERANCE

    results, _ = study
    out = tmp_path / "exported"
    result = run_cli_here("export", results, "--pick", "knee", "--out", out)  # in this process: an export starts no Ray
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    card = json.loads((out / "model.json").read_text())
    # every format by default: ExecuTorch's too (the test extra installs it)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "spec.json", "student.onnx", "student.pt", "student.pte", "student.torchscript.pt"]
    # the knee of the recorded front is the trial exported
    front = load_front(results)
    objectives = json.loads((results / "study.json").read_text())["objectives"]
    names = list(objectives)
    front = front.sort_values(names[0], ascending=objectives[names[0]] == "min")
    values = as_minimization(front[names].to_numpy(dtype=float), [objectives[m] for m in names])
    assert card["trial"] == int(front.iloc[knee_index(values)]["number"])
    for fmt in ("pt", "torchscript", "onnx", "executorch"):
        check = card["verification"][fmt]
        assert check["max_abs_diff"] <= LOGIT_TOLERANCE
        assert abs(check["accuracy"] - check["recorded_accuracy"]) <= 1 / check["samples"] + 1e-9
        assert f"  {fmt}" in result.stdout and "max |logit diff| vs PyTorch" in result.stdout
    # the ONNX file alone, run by onnxruntime on data preprocessed as the card says
    data = load_dataset(load_config(results / "config.yaml").data)
    pre = card["data"]["preprocessing"]
    x = (data.x_val.numpy().astype(np.float32) / pre["scale"] - np.array(pre["mean"], np.float32).reshape(1, -1, 1, 1)) / np.array(
        pre["std"], np.float32
    ).reshape(1, -1, 1, 1)
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x.astype(np.float32)})[0]
    accuracy = float((logits.argmax(1) == data.y_val.numpy()).mean())
    assert abs(accuracy - card["metrics"]["accuracy"]) <= 1 / len(x) + 1e-9
    assert card["files"]["onnx"]["sha256"] and card["versions"]["onnxruntime"] == ort.__version__
    assert card["architecture"]["family"] in ("cnn", "mobilenet") and card["recipe"]["distill"]["alpha"] > 0
    assert card["teacher"]["metrics"]["params"] > 0


def test_export_errors_are_one_line(study, tmp_path):
    import shutil

    results, _ = study  # error paths: the CLI in this process (no Python start-up, no export run)
    bad = run_cli_here("export", results, "--pick", "accuracy", "--max-latency-ms", "0.000001")
    assert bad.returncode == 2 and bad.stderr.startswith("error: no completed trial has latency_ms <= 1e-06")
    assert "Traceback" not in bad.stderr
    unknown = run_cli_here("export", results, "--pick", "99")
    assert unknown.returncode == 2 and "no trial 99" in unknown.stderr
    # a truncated checkpoint: a clear error naming the file, and no export folder left behind
    copy = tmp_path / "copy" / "tiny"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("ray", "export"))
    number = int(load_front(copy).iloc[0]["number"])
    ckpt = copy / "trials" / f"{number:04d}" / "student.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    corrupt = run_cli_here("export", copy, "--pick", str(number))
    assert corrupt.returncode == 2, corrupt.stderr
    assert str(ckpt) in corrupt.stderr and len(corrupt.stderr.strip().splitlines()) == 1
    assert not (copy / "export").exists() or not any((copy / "export").iterdir())


def test_resume_leaves_a_corrupt_checkpoint_out_of_the_front(study, tmp_path):
    import shutil

    results, _ = study
    copy = tmp_path / "copy" / "tiny"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("ray", "export", ".lock"))
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace(str(results.parent), str(copy.parent)))
    victim = int(load_front(copy).iloc[0]["number"])
    (copy / "trials" / f"{victim:04d}" / "student.pt").write_bytes(b"\x00" * 50)
    result = run_cli("resume", copy)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"trial {victim} left out of the front: " in result.stdout and "student.pt" in result.stdout
    front = load_front(copy)
    assert victim not in set(front["number"]) and len(front) >= 1
