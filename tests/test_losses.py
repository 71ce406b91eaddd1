import math

import pytest
import torch

from autodistill.config import TemperatureConfig
from autodistill.distill import kd_per_sample, kd_weight_at, lr_factor, ramp, temperature_at

# Student logits (1, 2, 0), teacher logits (2, 1, 0), T = 2, true class 1.
# p_t = softmax(1, 0.5, 0) = (0.506480, 0.307196, 0.186324)
# p_s = softmax(0.5, 1, 0) = (0.307196, 0.506480, 0.186324)
# KL(p_t || p_s) = 0.506480 ln(0.506480/0.307196) + 0.307196 ln(0.307196/0.506480) + 0 = 0.0996423
# L_kd = T^2 KL = 0.3985690;  CE = -ln softmax(1, 2, 0)[1] = 0.4076060
STUDENT = torch.tensor([[1.0, 2.0, 0.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0]])
TARGET = torch.tensor([1])


def test_kd_golden_value():
    assert kd_per_sample(STUDENT, TEACHER, 2.0).mean().item() == pytest.approx(0.3985690, abs=1e-6)


def test_kd_is_zero_for_identical_logits_and_batch_mean():
    logits = torch.randn(4, 5)
    assert kd_per_sample(logits, logits, 3.0).mean().item() == pytest.approx(0.0, abs=1e-6)
    both = kd_per_sample(torch.cat([STUDENT, STUDENT]), torch.cat([TEACHER, TEACHER]), 2.0).mean()
    assert both.item() == pytest.approx(0.3985690, abs=1e-6)
    per_sample = kd_per_sample(torch.cat([STUDENT, TEACHER]), torch.cat([TEACHER, TEACHER]), 2.0)
    assert per_sample.tolist() == pytest.approx([0.3985690, 0.0], abs=1e-6)


def _loss(**distill):
    from autodistill.config import DistillConfig
    from autodistill.distill import DistillLoss

    return DistillLoss(DistillConfig(**distill), None, None, None, epochs=4, kd=True)


def test_fused_golden_value_and_components():
    criterion = _loss(alpha=0.7)
    weights = criterion.weights(0.0, 1)
    assert weights == {"ce": pytest.approx(0.3), "kd": 0.7, "feat": 0.0, "att": 0.0}
    terms = criterion.components(weights, STUDENT, TARGET, teacher_stack=TEACHER[None], temperature=2.0)
    assert terms["ce"].item() == pytest.approx(0.4076060, abs=1e-6)
    assert terms["kd"].item() == pytest.approx(0.3985690, abs=1e-6)
    total, scales = criterion.combine(terms, weights)
    assert total.item() == pytest.approx(0.3 * 0.4076060 + 0.7 * 0.3985690, abs=1e-6) and scales == {}


def test_without_teacher_the_loss_is_cross_entropy():
    criterion = _loss(alpha=0.7)
    criterion.kd = False
    weights = criterion.weights(0.0, 1)
    assert weights["kd"] == 0 and weights["ce"] == 1.0
    terms = criterion.components(weights, STUDENT, TARGET)
    assert set(terms) == {"ce"} and criterion.combine(terms, weights)[0].item() == pytest.approx(0.4076060, abs=1e-6)


def test_explicit_ce_weight_and_kd_weight_schedule():
    criterion = _loss(alpha=0.7, alpha_end=0.3, alpha_schedule="linear", ce_weight=0.5)
    assert [criterion.weights(p, 1)["kd"] for p in (0.0, 0.5, 1.0)] == pytest.approx([0.7, 0.5, 0.3])
    assert criterion.weights(0.5, 1)["ce"] == 0.5
    assert _loss(alpha=0.7, alpha_end=0.3).weights(0.5, 1)["ce"] == pytest.approx(0.5)  # 1 - the KD weight


def test_mixed_labels_weight_the_two_cross_entropies():
    # CE(y=1) = 0.4076060; CE(y=0) = -ln softmax(1, 2, 0)[0] = 1.4076060
    criterion = _loss(alpha=0.0)
    terms = criterion.components(criterion.weights(0, 1), STUDENT, TARGET, labels_b=torch.tensor([0]), lam=0.25)
    assert terms["ce"].item() == pytest.approx(0.25 * 0.4076060 + 0.75 * 1.4076060, abs=1e-6)


def test_multi_teacher_soft_targets_are_the_weighted_mean_of_probabilities():
    # teachers (2, 1, 0) and (0, 1, 2), weights 3:1, T = 1
    # p1 = (0.665241, 0.244728, 0.090031), p2 = (0.090031, 0.244728, 0.665241)
    # mix = 0.75 p1 + 0.25 p2 = (0.521438, 0.244728, 0.233833); p_s = softmax(1, 2, 0) = (0.244728, 0.665241, 0.090031)
    # KL(mix || p_s) = 0.521438 ln(0.521438/0.244728) + 0.244728 ln(0.244728/0.665241) + 0.233833 ln(0.233833/0.090031) = 0.372893
    from autodistill.distill.losses import kd_per_sample, teacher_probs

    stack = torch.tensor([[[2.0, 1.0, 0.0]], [[0.0, 1.0, 2.0]]])
    weights = torch.tensor([0.75, 0.25])
    assert teacher_probs(stack, 1.0, weights)[0].tolist() == pytest.approx([0.521438, 0.244728, 0.233833], abs=1e-6)
    assert kd_per_sample(STUDENT, stack, 1.0, weights).item() == pytest.approx(0.372893, abs=1e-6)
    # one teacher in a stack is that teacher
    assert kd_per_sample(STUDENT, TEACHER[None], 2.0).item() == pytest.approx(0.3985690, abs=1e-6)
    criterion = DistillLossFor(alpha=1.0, weights=[3.0, 1.0])
    terms = criterion.components(criterion.weights(0, 1), STUDENT, TARGET, teacher_stack=stack, temperature=1.0)
    assert terms["kd"].item() == pytest.approx(0.372893, abs=1e-6)


def DistillLossFor(weights, **distill):
    from autodistill.config import DistillConfig
    from autodistill.distill import DistillLoss

    return DistillLoss(DistillConfig(**distill), None, None, None, epochs=4, kd=True, teacher_weights=weights)


def test_per_sample_kd_weights_favour_inputs_the_teacher_is_unsure_of():
    # rows (0.5, 0.5), (1, 0), (0.8, 0.2)
    # confidence: u = (0.5, 0, 0.2), mean 0.7/3 -> (2.142857, 0, 0.857143)
    # entropy / ln 2: u = (1, 0, 0.721928), mean 0.573976 -> (1.742233, 0, 1.257767)
    from autodistill.distill.losses import sample_weights

    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]])
    assert sample_weights(probs, "confidence").tolist() == pytest.approx([2.142857, 0.0, 0.857143], abs=1e-6)
    assert sample_weights(probs, "entropy").tolist() == pytest.approx([1.742233, 0.0, 1.257767], abs=1e-6)
    assert sample_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "entropy").tolist() == [1.0, 1.0]  # a sure teacher: uniform


def test_kd_clamp_caps_the_value_and_scales_the_gradient():
    criterion = _loss(alpha=1.0, kd_clamp=0.2)
    student = STUDENT.clone().requires_grad_(True)
    kd = criterion.components(criterion.weights(0, 1), student, TARGET, teacher_stack=TEACHER[None], temperature=2.0)["kd"]
    assert kd.item() == pytest.approx(0.2, abs=1e-6)
    kd.backward()
    unclamped = 2.0 * (torch.softmax(STUDENT / 2, -1) - torch.softmax(TEACHER / 2, -1))
    assert torch.allclose(student.grad, unclamped * 0.2 / 0.3985690, atol=1e-6)


def test_feature_loss_golden_values():
    from autodistill.distill.losses import feature_loss

    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    assert feature_loss(s, torch.zeros(1, 1, 2, 2)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert feature_loss(s, torch.zeros(1, 1, 1, 1)).item() == pytest.approx(2.5**2)  # pooled to 1x1: mean 2.5
    # cos((1, 0), (1, 1)) = 1 / sqrt 2
    cos = feature_loss(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1), torch.tensor([1.0, 1.0]).view(1, 2, 1, 1), "cosine")
    assert cos.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_attention_transfer_golden_value():
    # channels [1, 2] and [3, 0] over 2 positions, p = 2: mean_c A^2 = (5, 2) -> (5, 2) / sqrt 29
    # teacher: ones -> (1, 1) / sqrt 2; loss = mean((0.928477 - 0.707107)^2, (0.371391 - 0.707107)^2) = 0.080855
    from autodistill.distill.losses import attention_map, attention_transfer_loss

    feature = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    assert attention_map(feature).tolist()[0] == pytest.approx([5 / math.sqrt(29), 2 / math.sqrt(29)])
    assert attention_transfer_loss(feature, torch.ones(1, 7, 1, 2)).item() == pytest.approx(0.080855, abs=1e-6)


def test_cam_loss_golden_value():
    # teacher W = I, class 1: CAM = channel 1 = (3, 0) -> (1, 0)
    # student W[1] = (1, 1): CAM = (4, 2) -> (0.894427, 0.447214); loss = ((0.894427 - 1)^2 + 0.447214^2) / 2 = 0.105573
    from autodistill.distill.losses import cam_loss

    feature = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    loss = cam_loss(feature, torch.tensor([[0.0, 0.0], [1.0, 1.0]]), feature, torch.eye(2), torch.tensor([1]))
    assert loss.item() == pytest.approx(0.105573, abs=1e-6)


def test_attention_matrix_loss_golden_value_and_grid_pooling():
    # rows: KL((.5, .5) || (.25, .75)) = .5 ln 2 + .5 ln(2/3) = 0.143841; KL((1, 0) || (.5, .5)) = ln 2
    from autodistill.distill.losses import _pool_attention, attention_matrix_loss

    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    assert attention_matrix_loss(student, teacher).item() == pytest.approx((0.143841 + math.log(2)) / 2, abs=1e-6)
    assert attention_matrix_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # a 2x2 grid (4 tokens) pooled to 1 token: one row, all its mass
    attn = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    assert torch.allclose(_pool_attention(attn, 1), torch.ones(2, 3, 1, 1))
    # differing heads and grids: both averaged over heads, the larger grid pooled
    assert attention_matrix_loss(torch.softmax(torch.randn(2, 2, 4, 4), -1), torch.softmax(torch.randn(2, 4, 16, 16), -1)).item() >= 0


def test_gradnorm_balancing_rescales_by_gradient_norm_with_clamp():
    # d(3w)/dw = 3, d(w)/dw = 1: mean 2 -> scales 2/3 and 2; (4w, w): mean 2.5 -> 0.625 and 2.5 clamped to 2
    criterion = _loss(alpha=0.5, balance="gradnorm")
    w = torch.tensor(1.0, requires_grad=True)
    total, scales = criterion.combine({"ce": 3 * w, "kd": w}, {"ce": 1.0, "kd": 1.0}, [w])
    assert scales == pytest.approx({"ce": 2 / 3, "kd": 2.0}) and total.item() == pytest.approx(4.0)
    _, scales = criterion.combine({"ce": 4 * w, "kd": w}, {"ce": 1.0, "kd": 1.0}, [w])
    assert scales == pytest.approx({"ce": 0.625, "kd": 2.0})


def _nets(student_family="cnn", teacher_family="resnet"):
    from autodistill.students import build_student

    dims = {
        "cnn": {"widths": [4, 8], "depths": [1, 1]},
        "resnet": {"widths": [8, 16, 32], "depths": [1, 1, 1]},
        "mobilenet": {"widths": [4, 8], "depths": [1, 1]},
        "vit": {"embed_dim": 16, "depth": 2, "heads": 2, "patch_size": 2},
    }
    spec = lambda fam: {"family": fam, "dims": dims[fam], "in_channels": 1, "num_classes": 10, "image_size": 8}  # noqa: E731
    return build_student(spec(student_family), seed=0), build_student(spec(teacher_family), seed=1).eval()


def test_staged_training_trains_features_alone_first():
    from autodistill.config import DistillConfig
    from autodistill.distill import DistillLoss

    student, teacher = _nets()
    criterion = DistillLoss(DistillConfig(alpha=0.6, feature_weight=2.0, stage1_fraction=0.5), student, teacher, torch.zeros(1, 1, 8, 8), epochs=4, kd=True)
    assert criterion.weights(0.1, 1) == {"ce": 0.0, "kd": 0.0, "feat": 2.0, "att": 0.0}
    assert criterion.weights(0.6, 3) == {"ce": pytest.approx(0.4), "kd": 0.6, "feat": 2.0, "att": 0.0}
    assert [criterion.stage(e) for e in (1, 2, 3, 4)] == [1, 1, 2, 2]
    # without a feature loss there is nothing to train in stage 1: one stage
    plain = DistillLoss(DistillConfig(alpha=0.6, stage1_fraction=0.5), student, teacher, torch.zeros(1, 1, 8, 8), epochs=4, kd=True)
    assert plain.stage(1) == 2


def test_gradients_reach_the_projectors_and_stage_pairs():
    from autodistill.config import DistillConfig
    from autodistill.distill import DistillLoss
    from autodistill.distill.losses import stage_pairs
    from autodistill.distill.recipe import student_forward, teacher_forward

    assert stage_pairs(2, 3, [0, 1]) == [(0, 1), (1, 2)] and stage_pairs(4, 2, [0, 1, 2, 3]) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    student, teacher = _nets()
    criterion = DistillLoss(DistillConfig(alpha=0.5, feature_weight=1.0, feature_stages="all"), student, teacher, torch.zeros(1, 1, 8, 8), epochs=2, kd=True)
    assert criterion.pairs == [(0, 1), (1, 2)]
    assert [(p.in_channels, p.out_channels) for p in criterion.projectors] == [(4, 16), (8, 32)]
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    t_logits, t_feats, _ = teacher_forward(teacher, x, False)
    logits, s_feats, _ = student_forward(student, x, True, False)
    weights = criterion.weights(0.0, 1)
    terms = criterion.components(weights, logits, y, teacher_stack=t_logits[None], temperature=4.0, student_feats=s_feats, teacher_feats=t_feats)
    criterion.combine(terms, weights)[0].backward()
    for proj in criterion.projectors:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is not trained


def test_kd_gradient_reaches_student():
    student = STUDENT.clone().requires_grad_(True)
    kd_per_sample(student, TEACHER, 2.0).mean().backward()
    # d/dz_s of T^2 KL = T (p_s - p_t)
    expected = 2.0 * (torch.softmax(STUDENT / 2, -1) - torch.softmax(TEACHER / 2, -1))
    assert torch.allclose(student.grad, expected, atol=1e-6)


@pytest.mark.parametrize(
    "schedule, values",
    [
        ("constant", (4.0, 4.0, 4.0)),
        ("linear", (4.0, 2.5, 1.0)),
        ("cosine", (4.0, 2.5, 1.0)),
        ("step", (4.0, 1.0, 1.0)),  # 2 plateaus: start for p < 0.5, end from p = 0.5
    ],
)
def test_temperature_schedules_start_middle_end(schedule, values):
    cfg = TemperatureConfig(schedule=schedule, start=4.0, end=1.0, steps=2)
    got = tuple(temperature_at(cfg, p) for p in (0.0, 0.5, 1.0))
    assert got == pytest.approx(values)


def test_cosine_is_not_linear_and_step_plateaus():
    cosine = TemperatureConfig(schedule="cosine", start=4.0, end=1.0)
    assert temperature_at(cosine, 0.25) == pytest.approx(1 + 3 * (1 + math.cos(math.pi / 4)) / 2)
    step3 = TemperatureConfig(schedule="step", start=4.0, end=1.0, steps=3)
    assert [temperature_at(step3, p) for p in (0.0, 0.4, 0.7, 1.0)] == pytest.approx([4.0, 2.5, 1.0, 1.0])


def test_sigmoid_and_adaptive_temperatures():
    sigmoid = TemperatureConfig(schedule="sigmoid", start=4.0, end=1.0, sharpness=10.0)
    assert [temperature_at(sigmoid, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([4.0, 2.5, 1.0])
    # s(p) = 1 / (1 + e^(-10 (p - 0.5))): s(0) = 0.006693, s(0.25) = 0.075858, s(1) = 0.993307
    assert temperature_at(sigmoid, 0.25) == pytest.approx(4.0 - 3.0 * (0.075858 - 0.006693) / (0.993307 - 0.006693), abs=1e-5)
    adaptive = TemperatureConfig(schedule="adaptive", start=6.0, end=2.0)
    assert [temperature_at(adaptive, 0.3, h) for h in (0.0, 0.5, 1.0)] == pytest.approx([6.0, 4.0, 2.0])
    assert temperature_at(adaptive, 0.3, torch.tensor(0.25)).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="entropy"):
        temperature_at(adaptive, 0.3)


def test_weight_schedules_start_middle_end():
    from autodistill.config import DistillConfig

    assert [ramp("cosine", 0.7, 0.3, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.7, 0.5, 0.3])
    assert [ramp("sigmoid", 0.7, 0.3, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.7, 0.5, 0.3])
    assert kd_weight_at(DistillConfig(alpha=0.7), 0.9) == 0.7
    assert kd_weight_at(DistillConfig(alpha=0.7, alpha_end=0.3, alpha_schedule="linear"), 0.25) == pytest.approx(0.6)


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-9)


LOSS_CASES = {
    "kd": ({"alpha": 0.7}, "resnet"),
    "kd_sigmoid_adaptive": ({"alpha": 0.7, "alpha_end": 0.2, "alpha_schedule": "sigmoid", "temperature": {"schedule": "adaptive"}}, "resnet"),
    "kd_sample_weighted_clamped": ({"alpha": 0.7, "sample_weighting": "confidence", "kd_clamp": 0.5}, "resnet"),
    "feature_mse": ({"alpha": 0.5, "feature_weight": 1.0, "feature_stages": "all"}, "resnet"),
    "feature_cosine": ({"alpha": 0.5, "feature_weight": 1.0, "feature_distance": "cosine"}, "resnet"),
    "attention_spatial": ({"alpha": 0.5, "attention_weight": 100.0, "feature_stages": "all"}, "resnet"),
    "attention_cam": ({"alpha": 0.5, "attention_weight": 10.0, "attention_type": "cam"}, "resnet"),
    "attention_matrix": ({"alpha": 0.5, "attention_weight": 1.0, "attention_type": "matrix", "feature_weight": 1.0}, "vit"),
    "gradnorm": ({"alpha": 0.5, "feature_weight": 1.0, "attention_weight": 10.0, "balance": "gradnorm"}, "resnet"),
}


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_every_loss_with_every_student_family_steps(case):
    """Registry-driven: one forward/backward of each loss with each registered family."""
    from autodistill.config import DistillConfig
    from autodistill.distill import DistillLoss
    from autodistill.distill.recipe import student_forward, teacher_forward
    from autodistill.students import list_families

    distill, teacher_family = LOSS_CASES[case]
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    for family in list_families():
        student, teacher = _nets(family, teacher_family)
        criterion = DistillLoss(DistillConfig(**distill), student, teacher, x[:1], epochs=3, kd=True)
        matrices = criterion.needs_attention_matrices
        t_logits, t_feats, t_attns = teacher_forward(teacher, x, matrices)
        logits, s_feats, s_attns = student_forward(student, x, criterion.needs_teacher_features, matrices)
        weights = criterion.weights(0.5, 2)
        params = [p for p in student.parameters()]
        terms = criterion.components(
            weights,
            logits,
            y,
            teacher_stack=t_logits[None],
            temperature=criterion.temperature(0.5, t_logits[None]),
            student_feats=s_feats,
            student_attns=s_attns,
            teacher_feats=t_feats,
            teacher_attns=t_attns,
            student=student,
            teacher=teacher,
        )
        expected = {k for k, w in weights.items() if w > 0} | {"ce"}
        assert set(terms) == expected, (family, case)
        total, _ = criterion.combine(terms, weights, params)
        total.backward()
        assert torch.isfinite(total), (family, case)
        assert sum(p.grad.abs().sum() for p in params if p.grad is not None) > 0, (family, case)
        if case == "attention_matrix":  # a transformer pair matches matrices; a conv student falls back to maps
            assert criterion.att_kind == ("matrix" if family == "vit" else "spatial")
