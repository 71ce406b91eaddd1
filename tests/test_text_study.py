"""A real language-model study through the CLI (real Ray, real Optuna sqlite storage): a
Llama teacher from a local Hugging Face checkpoint directory, students searched in shape,
start and recipe with KD, hidden-state and attention losses and the teacher's synthetic
continuations; then the export round trip (``from_pretrained`` offline, ONNX Runtime)."""

import json
import os

import pandas as pd
import pytest
import torch
import yaml
from helpers import run_cli

from autodistill.tasks.language_modeling import models
from autodistill.tasks.language_modeling.corpus import build_tokenizer

pytestmark = pytest.mark.integration

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_checkpoint(folder, family="llama", vocab=257):
    """A small causal LM saved as a Hugging Face checkpoint (weights, config, byte tokenizer)."""
    tok = build_tokenizer("byte", 0, [])
    shape = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}
    model = models.build(models.new_config(family, shape, vocab, 64, tok.eos_token_id), 0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def text_study(tmp_path, name="text", **extra):
    raw = {
        "name": name,
        "task": "language_modeling",
        "data": {"corpus": "pydoc_topics", "seq_len": 32, "max_train_tokens": 12000, "synthetic": {"count": 8, "prompt_tokens": 8}},
        "teacher": {"checkpoint": str(make_checkpoint(tmp_path / "teacher"))},
        "student": {
            "hidden_size": {"choice": [32, 64]},
            "num_hidden_layers": {"low": 1, "high": 2},
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "init": {"choice": ["random", "pruned_teacher"]},
        },
        "distill": {
            "kd_loss": {"choice": ["forward_kl", "jsd"]},
            "alpha": 0.7,
            "top_k": 8,
            "hidden_weight": {"choice": [0.0, 1.0]},
            "attention_weight": 0.5,
            "synthetic_ratio": 0.25,
        },
        "train": {"epochs": 2, "steps_per_epoch": 5, "batch_size": 8},
        "search": {"trials": 4, "max_concurrent": 2, "seed": 0},
        "latency": {"prompt_tokens": 16, "decode_tokens": 4, "warmup": 2, "repeats": 5, "final_repeats": 10},
        "execution": {"results": str(tmp_path / "results")},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("text")
    result = run_cli("search", text_study(tmp_path), timeout=900, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, tmp_path / "results" / "text", result


def test_a_text_study_runs_every_trial_and_records_the_front(study):
    _, results, result = study
    trials = pd.read_csv(results / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 4, trials[["state", "fail_reason"]]
    for col in ("perplexity", "token_accuracy", "test_perplexity", "params_non_embedding", "prefill_ms", "decode_ms_per_token", "init_used"):
        assert trials[col].notna().all(), col
    assert (trials["perplexity"] > 1).all() and ((trials["token_accuracy"] >= 0) & (trials["token_accuracy"] <= 1)).all()
    # a shape the teacher cannot be pruned to (head size 32 against its 16) starts at random and says why
    assert all(u in ("random", "pruned_teacher") or u.startswith("random (pruned_teacher: head size") for u in trials["init_used"])
    front = pd.read_csv(results / "pareto.csv")
    assert len(front) >= 1 and front["decode_ms_per_token_in_trial"].notna().all() and front["shape"].str.contains("heads").all()
    summary = json.loads((results / "study.json").read_text())
    assert summary["objectives"] == {"perplexity": "min", "params_non_embedding": "min", "decode_ms_per_token": "min"}
    teacher = summary["teacher"]
    assert teacher["family"] == "llama" and teacher["source"].startswith("checkpoint ")
    assert teacher["metrics"]["params_non_embedding"] > 0 and teacher["metrics"]["decode_ms_per_token"] > 0
    assert "top-8 logits of" in result.stdout and "bytes per token" in result.stdout
    assert "the teacher writes 8 synthetic continuations" in result.stdout
    import optuna

    storage = optuna.load_study(study_name="text", storage=f"sqlite:///{results / 'study.db'}")
    for t in storage.get_trials():  # the per-epoch curve of the quality metric
        assert len(t.user_attrs["perplexity_curve"]) == 2


def test_export_round_trip_from_pretrained_and_onnxruntime(study):
    tmp_path, results, _ = study
    out = tmp_path / "exported"
    result = run_cli("export", results, "--pick", "perplexity", "--out", out, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "max |logit diff| vs PyTorch" in result.stdout
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "language_modeling" and card["data"]["input"]["name"] == "input_ids"
    assert set(card["files"]) == {"hf", "onnx"}

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "hf", local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out / "hf", local_files_only=True)
    assert model.config.model_type == "llama"
    ids = tok("The assert statement", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        reference = model(input_ids=ids).logits.numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input_ids": ids.numpy()})[0]
    assert abs(logits - reference).max() < 1e-4
    trials = pd.read_csv(results / "trials.csv")
    best = trials.sort_values("perplexity").iloc[0]
    assert card["trial"] == int(best["number"])
    assert card["verification"]["hf"]["perplexity"] == pytest.approx(best["perplexity"], rel=1e-4)
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
