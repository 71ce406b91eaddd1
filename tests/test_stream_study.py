"""A real study (Ray Tune + Optuna) on an image folder streamed from disk by DataLoader
workers inside the trial workers, with a feature loss whose teacher stage outputs are cached
once for the study; then export, which verifies the file on the streamed validation split."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli, run_cli_here, small_study

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


def _folder(root, per_class=30):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b", "c")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (18, 18, 3), dtype=np.uint8)
            img[:, :, c] += 150  # a learnable colour cue per class
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


def test_streamed_folder_study_with_cached_stage_outputs(tmp_path):
    root = _folder(tmp_path / "imgs")
    config = small_study(
        tmp_path,
        "streamed",
        **{
            "data": {"dataset": "imagefolder", "root": str(root), "image_size": 16, "storage": "stream", "workers": 1},
            "distill.feature_weight": 0.5,
            "distill.feature_stages": "all",
            "teacher.train.epochs": 3,
            "train.epochs": 3,
            "train.batch_size": 8,
            "search.trials": 2,
        },
    )
    result = run_cli("search", config, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # the console wraps long lines
    assert "streamed from disk (1 DataLoader workers)" in out
    assert "stage outputs" in out and "runs live" not in out
    results = tmp_path / "results" / "streamed"
    trials = pd.read_csv(results / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert (trials["accuracy"] > 0.5).all()  # three colour-coded classes
    metrics = json.loads(next((results / "trials").glob("*/metrics.json")).read_text())
    assert all(h["loss_feat"] > 0 for h in metrics["history"])
    out = tmp_path / "export"
    exported = run_cli_here("export", results, "--pick", "knee", "--out", out, "--format", "pt")  # verified on the decoded val split
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    assert (out / "student.pt").is_file() and "max |logit diff| vs PyTorch" in exported.stdout
