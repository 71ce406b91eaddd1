"""Bad input of a language-model study through the real CLI (in process): one line naming the
field or file, exit code 2, no traceback, nothing written under results/."""

import json

import pytest
from helpers import check_one_line_error, write_study
from typer.testing import CliRunner

from autodistill.cli import app
from autodistill.tasks.language_modeling.corpus import build_tokenizer


def text_study(tmp_path, **overrides):
    raw = {
        "name": "text",
        "task": "language_modeling",
        "data": {"seq_len": 32, "max_train_tokens": 4000},
        "teacher": {"arch": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64}},
        "search": {"trials": 1},
        "execution": {"results": str(tmp_path / "results")},
    }
    return write_study(tmp_path / "text.yaml", raw, overrides)


def _folder(kind):
    """Teacher folders that are not a usable checkpoint."""

    def make(tmp_path):
        folder = tmp_path / "ckpt"
        folder.mkdir()
        if kind != "empty" and kind != "no tokenizer":
            build_tokenizer("byte", 0, []).save_pretrained(folder)
        if kind == "no tokenizer":
            (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        if kind == "bert":
            (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        if kind == "no weights":
            (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}))
        return str(folder)

    return make


# (overrides, or a function of tmp_path giving teacher.checkpoint; text expected in the error; found by validate too)
CASES = [
    ({"student.hidden_size": 30, "student.num_attention_heads": 4}, "student: hidden_size 30 is not divisible by num_attention_heads 4", True),
    ({"student.num_attention_heads": 4, "student.num_key_value_heads": 3}, "student: num_key_value_heads 3 does not divide num_attention_heads 4", True),
    ({"teacher.arch.hidden_size": 31}, "teacher.arch: hidden_size 31 is not divisible by num_attention_heads 2", True),
    ({"teacher.arch.family": "gpt2"}, "teacher.arch.family", True),
    ({"data.corpus": "/nope/corpus.txt"}, "data.corpus: not found: /nope/corpus.txt", True),
    ({"distill.synthetic_ratio": 0.5}, "distill.synthetic_ratio: needs data.synthetic.count > 0", True),
    ({"distill.stage1_fraction": 0.3}, "distill.stage1_fraction: the first stage trains on the hidden-state loss alone", True),
    ({"distill.kd_loss": "tvd"}, "distill.kd_loss: unknown value 'tvd'", True),
    ({"latency.backend": "onnxruntime"}, "latency.backend: language_modeling measures prefill and decode with torch only", True),
    ({"objectives": {"accuracy": "max"}}, "objectives: unknown metric 'accuracy' for task language_modeling", True),
    ({"teachers": [{"arch": {}}]}, "teachers: unknown key", True),
    ({"task": "translation"}, "task: unknown task 'translation'", True),
    ({"student.init": "distilled"}, "student.init: unknown value 'distilled'", True),
    (_folder("empty"), "teacher.checkpoint: {}: not a transformers checkpoint (no config.json)", True),
    (_folder("bert"), "teacher.checkpoint: {}: model_type 'bert' is not supported; valid: qwen2, llama", False),
    (_folder("no tokenizer"), "teacher.checkpoint: {}: no tokenizer (tokenizer.json or tokenizer_config.json", True),
    (_folder("no weights"), "teacher.checkpoint: {}: the weights cannot be loaded", False),
]


_check = check_one_line_error


@pytest.mark.parametrize(("overrides", "expected", "static"), CASES, ids=[c[1][:60] for c in CASES])
def test_bad_text_study_is_one_line(tmp_path, overrides, expected, static):
    if callable(overrides):
        folder = overrides(tmp_path)
        overrides, expected = {"teacher.checkpoint": folder}, expected.format(folder)
    path = text_study(tmp_path, **overrides)
    for command in ("validate", "search") if static else ("search",):
        _check(CliRunner().invoke(app, [command, str(path)]), expected, tmp_path)


def test_an_empty_corpus_file_is_named(tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n")
    _check(CliRunner().invoke(app, ["search", str(text_study(tmp_path, **{"data.corpus": str(corpus)}))]), f"data.corpus: {corpus}: no text", tmp_path)
