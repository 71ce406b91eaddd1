"""A real study over the distillation recipe (real Ray, real Optuna storage, the CLI): two
teachers, conv and ViT students, feature and attention losses, staged training, MixUp and
the new schedules; every trial completes and reports each loss term, and a ViT student
exports and verifies."""

import json

import optuna
import pytest
from helpers import run_cli, run_cli_here, small_study

from autodistill import load_trials

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("recipe")
    teacher = {"arch": {"family": "cnn", "widths": [16, 32], "depths": [1, 1]}, "train": {"epochs": 4}}
    vit_teacher = {"arch": {"family": "vit", "patch_size": 2, "embed_dim": 32, "depth": 2, "heads": 2}, "train": {"epochs": 4}, "weight": 0.5}
    cfg = small_study(
        tmp_path,
        "recipe",
        **{
            "teachers": [teacher, vit_teacher],
            "student.family": {"choice": ["cnn", "vit"]},
            "student.vit": {"patch_size": 2, "embed_dim": {"choice": [16, 24]}, "depth": 2, "heads": 2},
            "distill": {
                "alpha": {"low": 0.3, "high": 0.9},
                "alpha_end": {"choice": [None, 0.2]},
                "temperature": {"schedule": {"choice": ["sigmoid", "adaptive"]}, "start": 4.0},
                "feature_weight": {"choice": [0.0, 1.0]},
                "attention_weight": {"choice": [0.0, 10.0]},
                "attention_type": "cam",
                "sample_weighting": {"choice": ["none", "entropy"]},
                "stage1_fraction": {"choice": [0.0, 0.34]},
            },
            "augment": {"mixup": {"choice": [0.0, 0.2]}, "teacher": "live"},
            "search.trials": 6,
            "search.points_to_evaluate": [
                {"student.family": "vit", "distill.feature_weight": 1.0, "distill.attention_weight": 10.0, "distill.stage1_fraction": 0.34},
                {"student.family": "cnn", "distill.feature_weight": 1.0, "distill.attention_weight": 0.0, "augment.mixup": 0.2},
            ],
        },
    )
    result = run_cli("search", cfg, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path / "results" / "recipe", result, tmp_path


def test_every_trial_completes_and_both_teachers_are_recorded(study):
    results, result, _ = study
    trials = load_trials(results)
    assert len(trials) == 6 and set(trials["state"]) == {"COMPLETE"}, trials[["state", "fail_reason"]]
    assert "teacher 1 (weight 0.5): vit" in result.stdout
    # the first teacher's stage outputs are cached; trials that draw MixUp run the teachers on the mixed batch
    out = " ".join(result.stdout.split())  # the console wraps long lines
    assert "stage outputs" in out and "runs live on augmented batches" in out
    storage = optuna.load_study(study_name="recipe", storage=f"sqlite:///{results / 'study.db'}")
    teachers = storage.user_attrs["teachers"]
    assert [t["family"] for t in teachers] == ["cnn", "vit"] and [t["weight"] for t in teachers] == [1.0, 0.5]


def test_each_loss_term_is_reported_per_epoch(study):
    results, _, _ = study
    for folder in sorted((results / "trials").iterdir()):
        metrics = json.loads((folder / "metrics.json").read_text())
        params = json.loads((folder / "spec.json").read_text())["params"]
        history = metrics["history"]
        assert len(history) == 3 and all(h["loss_ce"] > 0 and h["loss_kd"] >= 0 for h in history)
        if params.get("distill.feature_weight") == 1.0:
            assert all(h["loss_feat"] > 0 for h in history)
            if params.get("distill.stage1_fraction") == 0.34:  # one of 3 epochs on the features alone
                assert [h["stage"] for h in history] == [1, 2, 2] and history[0]["w_kd"] == 0 and history[1]["w_kd"] > 0
        else:
            assert "loss_feat" not in history[0]
        assert ("loss_att" in history[0]) == (params.get("distill.attention_weight") == 10.0)


def test_a_vit_student_exports_and_verifies(study):
    results, _, tmp_path = study
    trials = load_trials(results)
    vit = trials[trials["param.student.family"] == "vit"]
    number = int(vit.iloc[0]["number"])
    out = tmp_path / "vit-export"
    # ONNX is where attention can fail to export; ExecuTorch's lowering (seconds) is the e2e test's, of every format
    result = run_cli_here("export", results, "--pick", str(number), "--out", out, "--format", "pt,torchscript,onnx")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"]["family"] == "vit"
    assert all(card["verification"][fmt]["max_abs_diff"] <= 1e-3 for fmt in ("pt", "torchscript", "onnx"))
