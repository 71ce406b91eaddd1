"""Language-model students: shapes from the teacher's config, parameter counts, the three
starts (random, the teacher's layers, the teacher pruned in width), training that continues
exactly from an epoch checkpoint, and the latency probe."""

import copy

import pytest
import torch

from autodistill.config import LatencyConfig, TextDistillConfig, TextTrainConfig
from autodistill.tasks.language_modeling import models
from autodistill.tasks.language_modeling.latency import measure_lm_latency
from autodistill.tasks.language_modeling.losses import topk_cache
from autodistill.tasks.language_modeling.train import TextTargets, train_lm

TEACHER = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}


def _teacher(family="qwen2", seed=0):
    return models.build(models.new_config(family, TEACHER, 50, 64, 49), seed).eval()


def _ids(n=4, t=16, seed=0):
    return torch.randint(0, 50, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_a_student_is_the_teachers_architecture_at_its_own_shape(family):
    teacher = _teacher(family)
    config = models.student_config(
        teacher.config, {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": None, "intermediate_size": None}
    )
    assert config.model_type == family and config.vocab_size == 50
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (32, 2, 2, 2, 96)
    student = models.build(config, 0)
    counts = models.param_counts(student)
    # untied: the input embedding and the output head, 50 x 32 each
    assert counts["params_embedding"] == 2 * 50 * 32
    assert counts["params"] == sum(p.numel() for p in student.parameters()) == counts["params_embedding"] + counts["params_non_embedding"]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"hidden_size": 30, "num_attention_heads": 4, "num_key_value_heads": None}, "hidden_size 30 is not divisible by num_attention_heads 4"),
        ({"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 4"),
    ],
)
def test_heads_that_do_not_fit_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        models.student_config(_teacher().config, {"num_hidden_layers": 1, "intermediate_size": None, **shape})


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_pruning_the_teacher_to_its_own_shape_reproduces_it_exactly(family):
    """The slicing of every matrix is checked by the identity: a student of the teacher's shape
    started from the pruned teacher gives the teacher's logits."""
    teacher = _teacher(family)
    student = models.build(models.student_config(teacher.config, TEACHER), 1)
    assert models.init_student(student, teacher, "pruned_teacher", _ids()) == "pruned_teacher"
    x = _ids(seed=1)
    with torch.no_grad():
        assert torch.equal(student(input_ids=x).logits, teacher(input_ids=x).logits)


def test_a_pruned_teacher_keeps_its_most_active_channels_and_starts_better_than_random():
    teacher = _teacher()
    shape = {**TEACHER, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64, "num_hidden_layers": 2}
    calibration = _ids(8, 32)
    keep = models.importance_keep(teacher, models.student_config(teacher.config, shape), calibration)
    assert len(keep["hidden"]) == 32 and keep["hidden"].tolist() == sorted(keep["hidden"].tolist())
    assert all(len(v) == 64 for v in keep["mlp"].values())
    assert all(len(v) == 2 * 16 // 16 for v in keep["q"].values())  # 2 query heads
    student = models.build(models.student_config(teacher.config, shape), 1)
    assert models.init_student(student, teacher, "pruned_teacher", calibration) == "pruned_teacher"
    # its first layer is the teacher's first, sliced: rows of the kept neurons, columns of the kept channels
    t_up, s_up = teacher.model.layers[0].mlp.up_proj.weight, student.model.layers[0].mlp.up_proj.weight
    assert torch.equal(s_up, t_up[keep["mlp"][0]][:, keep["hidden"]])


def test_teacher_layers_are_every_kth_and_a_wrong_width_falls_back_to_random():
    teacher = _teacher()
    student = models.build(models.student_config(teacher.config, {**TEACHER, "num_hidden_layers": 2}), 1)
    assert models.init_student(student, teacher, "teacher_layers", None) == "teacher_layers"
    assert models.even_layers(4, 2) == [0, 3]
    for s_layer, t_index in zip(student.model.layers, [0, 3]):
        for (name, p), q in zip(s_layer.named_parameters(), teacher.model.layers[t_index].parameters()):
            assert torch.equal(p, q), name
    narrow = models.build(models.student_config(teacher.config, {**TEACHER, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}), 1)
    used = models.init_student(narrow, teacher, "teacher_layers", None)
    assert used.startswith("random (teacher_layers: the width differs from the teacher's (hidden_size")
    odd = models.build(models.student_config(teacher.config, {**TEACHER, "hidden_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2}), 1)
    assert models.init_student(odd, teacher, "pruned_teacher", _ids()) == "random (pruned_teacher: head size 12 differs from the teacher's 16)"


def _run(model, seqs, targets, epochs, **kw):
    cfg = TextTrainConfig(epochs=epochs, steps_per_epoch=3, batch_size=4, lr=1e-2)
    distill = TextDistillConfig(alpha=0.5, kd_loss="jsd", hidden_weight=1.0, attention_weight=1.0, attention_loss="frobenius", noise_std=0.05)
    return train_lm(model, seqs, seqs[:4], cfg, distill, targets, seed=3, **kw)


def test_training_continues_exactly_from_an_epoch_checkpoint():
    """KD from the cache, hidden-state (through a projection) and attention losses, noise:
    two epochs straight equal one epoch, a checkpoint, and the second epoch resumed."""
    teacher = _teacher()
    models.set_attention(teacher, "eager")
    seqs = _ids(16, 16, seed=2)
    with torch.no_grad():
        values, indices, tail = topk_cache(teacher(input_ids=seqs).logits, 8)
    targets = TextTargets(values, indices, tail, teacher=teacher, teacher_config=teacher.config.to_dict())
    shape = {**TEACHER, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2}

    def student():
        return models.build(models.student_config(teacher.config, shape), 5, attention="eager")

    straight = student()
    history = _run(straight, seqs, targets, 2)
    assert history[-1].extra["loss_hidden"] > 0 and history[-1].extra["loss_attention"] > 0
    saved = []
    first = student()
    _run(first, seqs, targets, 2, on_checkpoint=lambda state: saved.append(copy.deepcopy(state)))  # a trial saves it to disk at once
    resumed = student()
    history2 = _run(resumed, seqs, targets, 2, resume=saved[0])
    assert history2[-1].extra["perplexity"] == pytest.approx(history[-1].extra["perplexity"], rel=1e-6)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_latency_probe_gives_prefill_and_decode_with_spread():
    model = _teacher()
    out = measure_lm_latency(model, LatencyConfig(prompt_tokens=8, decode_tokens=4, warmup=2, repeats=5))
    assert set(out) == {f"{m}{s}" for m in ("prefill_ms", "decode_ms_per_token") for s in ("", "_p10", "_p90")}
    assert 0 < out["prefill_ms_p10"] <= out["prefill_ms"] <= out["prefill_ms_p90"]
    assert out["decode_ms_per_token"] > 0
    assert not model.training


@pytest.mark.parametrize("schedule", ["constant", "adaptive"])
def test_kd_without_a_cache_reads_the_teachers_full_logits_and_equals_a_full_cache(schedule):
    """distill.top_k: 0 runs the teacher on the batch; a cache of the whole vocabulary holds the
    same distribution, so both give the same KD term (entropy weighting and an adaptive
    temperature included)."""
    from autodistill.tasks.language_modeling.train import TextLoss

    teacher = _teacher()
    student = models.build(models.student_config(teacher.config, {**TEACHER, "num_hidden_layers": 1}), 2)
    ids = _ids(2, 12, seed=4)
    cfg = TextDistillConfig(alpha=1.0, kd_loss="reverse_kl", token_weighting="entropy", temperature={"schedule": schedule, "start": 2.0, "end": 1.0})
    with torch.no_grad():
        t_out, s_out = teacher(input_ids=ids), student(input_ids=ids)
    full_cache = topk_cache(t_out.logits, 50)
    live = TextLoss(cfg, student, teacher.config, 10, True, live=True)
    cached = TextLoss(cfg, student, teacher.config, 10, True)
    assert live.needs_teacher and not cached.needs_teacher
    loss_live, parts_live = live(3, ids, s_out, None, t_out)
    loss_cached, parts_cached = cached(3, ids, s_out, full_cache, None)
    assert loss_live.item() == pytest.approx(loss_cached.item(), rel=1e-3)
    assert parts_live["temperature"].item() == pytest.approx(parts_cached["temperature"].item(), rel=1e-3)


def test_training_from_cached_internals_matches_a_live_teacher():
    """Hidden states and attention matrices read from the float16 cache train the student as
    the teacher run on every batch does (same batches, same seed), to float16 rounding."""
    from autodistill.tasks.language_modeling.teacher import internals_of

    teacher = _teacher()
    models.set_attention(teacher, "eager")
    seqs = _ids(16, 16, seed=2)
    with torch.no_grad():
        values, indices, tail = topk_cache(teacher(input_ids=seqs).logits, 8)
    saved = internals_of(teacher, seqs, True, True, "cpu")
    live = TextTargets(values, indices, tail, teacher=teacher, teacher_config=teacher.config.to_dict())
    cached = TextTargets(values, indices, tail, hidden=saved["hidden"], attentions=saved["attentions"], teacher_config=teacher.config.to_dict())
    shape = {**TEACHER, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2}
    runs = []
    for targets in (live, cached):
        student = models.build(models.student_config(teacher.config, shape), 5, attention="eager")
        runs.append(_run(student, seqs, targets, 1)[-1])
    assert runs[1].extra["loss_hidden"] == pytest.approx(runs[0].extra["loss_hidden"], rel=1e-2)
    assert runs[1].extra["loss_attention"] == pytest.approx(runs[0].extra["loss_attention"], rel=1e-2)
    assert runs[1].extra["perplexity"] == pytest.approx(runs[0].extra["perplexity"], rel=1e-2)
