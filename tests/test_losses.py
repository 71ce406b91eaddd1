import math

import pytest
import torch

from autodistill.config import TemperatureConfig
from autodistill.distill import FusedKDLoss, KDLoss, lr_factor, temperature_at

# Student logits (1, 2, 0), teacher logits (2, 1, 0), T = 2, true class 1.
# p_t = softmax(1, 0.5, 0) = (0.506480, 0.307196, 0.186324)
# p_s = softmax(0.5, 1, 0) = (0.307196, 0.506480, 0.186324)
# KL(p_t || p_s) = 0.506480 ln(0.506480/0.307196) + 0.307196 ln(0.307196/0.506480) + 0 = 0.0996423
# L_kd = T^2 KL = 0.3985690;  CE = -ln softmax(1, 2, 0)[1] = 0.4076060
STUDENT = torch.tensor([[1.0, 2.0, 0.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0]])
TARGET = torch.tensor([1])


def test_kd_golden_value():
    assert KDLoss()(STUDENT, TEACHER, 2.0).item() == pytest.approx(0.3985690, abs=1e-6)


def test_kd_is_zero_for_identical_logits_and_batch_mean():
    logits = torch.randn(4, 5)
    assert KDLoss()(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    both = KDLoss()(torch.cat([STUDENT, STUDENT]), torch.cat([TEACHER, TEACHER]), 2.0)
    assert both.item() == pytest.approx(0.3985690, abs=1e-6)
    per_sample = KDLoss(reduction="none")(torch.cat([STUDENT, TEACHER]), torch.cat([TEACHER, TEACHER]), 2.0)
    assert per_sample.tolist() == pytest.approx([0.3985690, 0.0], abs=1e-6)


def test_fused_golden_value_and_components():
    total, parts = FusedKDLoss()(STUDENT, TARGET, TEACHER, alpha=0.7, temperature=2.0)
    assert parts["ce"].item() == pytest.approx(0.4076060, abs=1e-6)
    assert parts["kd"].item() == pytest.approx(0.3985690, abs=1e-6)
    assert total.item() == pytest.approx(0.3 * 0.4076060 + 0.7 * 0.3985690, abs=1e-6)


def test_fused_without_teacher_is_cross_entropy():
    total, parts = FusedKDLoss()(STUDENT, TARGET, None, alpha=0.7, temperature=2.0)
    assert total.item() == pytest.approx(0.4076060, abs=1e-6)
    assert set(parts) == {"ce"}


def test_kd_gradient_reaches_student():
    student = STUDENT.clone().requires_grad_(True)
    KDLoss()(student, TEACHER, 2.0).backward()
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


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-9)
