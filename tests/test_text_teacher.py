"""The language-model teacher trained here once and cached, and its outputs cached once per
study: the top-k cache round trip and the synthetic continuations."""

import torch

from autodistill.config import parse_config
from autodistill.tasks.language_modeling.corpus import load_corpus
from autodistill.tasks.language_modeling.losses import topk_cache
from autodistill.tasks.language_modeling.teacher import prepare_teacher, teacher_targets


def _config(tmp_path, **distill):
    return parse_config(
        {
            "task": "language_modeling",
            "data": {"seq_len": 32, "max_train_tokens": 3000, "synthetic": {"count": 3, "prompt_tokens": 8, "top_p": 0.9, "temperature": 0.7}},
            "teacher": {
                "arch": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64},
                "train": {"steps": 8},
            },
            "distill": {"top_k": 4, "synthetic_ratio": 0.5, **distill},
            "execution": {"results": str(tmp_path)},
        }
    )


def test_teacher_is_trained_once_and_its_outputs_are_cached_once(tmp_path):
    config = _config(tmp_path)
    data = load_corpus(config.data, None)
    lines = []
    teacher, record = prepare_teacher(config, data, lines.append)
    assert record["source"].startswith("trained in ") and any("training teacher qwen2" in line for line in lines)
    again, record2 = prepare_teacher(config, data, lines.append)
    assert record2["source"].startswith("cache ")
    assert record2["metrics"]["perplexity"] == record["metrics"]["perplexity"]
    for p, q in zip(teacher.parameters(), again.parameters()):
        assert torch.equal(p, q)

    targets = teacher_targets(config, data, teacher, lines.append)
    assert targets.values.shape == (len(data.train), 32, 4) and targets.values.dtype == torch.float16
    assert targets.indices.dtype == torch.int32 and targets.tail.shape == (len(data.train), 32)
    assert lines[-1].startswith("teacher outputs: top-4 logits of") and "28 bytes per token" in lines[-1]  # 4 x (2 + 4) + 4
    # what the cache holds is the teacher's top-k of each training sequence
    with torch.no_grad():
        values, indices, tail = topk_cache(teacher(input_ids=data.train[:2]).logits, 4)
    assert torch.equal(targets.indices[:2], indices) and torch.allclose(targets.tail[:2], tail, atol=1e-5)
    # the synthetic continuations: prompts from the training set, continued to seq_len, with their own cache
    assert targets.synthetic.shape == (3, 32) and targets.synthetic_cache[0].shape == (3, 32, 4)
    prompts = {tuple(row[:8].tolist()) for row in data.train}
    assert all(tuple(row[:8].tolist()) in prompts for row in targets.synthetic)
    cached = teacher_targets(config, data, teacher, lines.append)
    assert "cache " in lines[-1] and torch.equal(cached.values, targets.values) and torch.equal(cached.synthetic, targets.synthetic)
    assert targets.teacher is None  # no hidden-state or attention loss: trials do not need the teacher itself


def test_teacher_internals_are_cached_within_the_budget_else_the_teacher_runs(tmp_path):
    config = _config(tmp_path, hidden_weight=1.0, attention_weight=1.0)
    data = load_corpus(config.data, None)
    teacher, _ = prepare_teacher(config, data, print)
    lines = []
    targets = teacher_targets(config, data, teacher, lines.append)
    rows = len(data.train) + 3  # the training sequences, then the synthetic ones
    assert targets.teacher is None and targets.cached_internals == {"hidden", "attentions"}
    assert len(targets.hidden) == 3 and targets.hidden[0].shape == (rows, 32, 32) and targets.hidden[0].dtype == torch.float16
    assert len(targets.attentions) == 2 and targets.attentions[0].shape == (rows, 2, 32, 32)
    assert any(line.startswith("teacher internals cached: hidden and attentions") for line in lines)
    with torch.no_grad():
        out = teacher(input_ids=targets.synthetic[:1], output_hidden_states=True)
    assert torch.allclose(targets.hidden[2][len(data.train)].float(), out.hidden_states[2][0], atol=1e-2)
    # a budget that holds neither: the teacher is shipped and runs on every batch
    small = parse_config({**config.model_dump(mode="json"), "execution": {"results": str(tmp_path), "teacher_cache_gb": 0.0}})
    live = teacher_targets(small, data, teacher, lines.append)
    assert live.teacher is teacher and live.hidden is None and "over execution.teacher_cache_gb" in lines[-2]
