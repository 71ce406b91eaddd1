"""The CUDA path (skipped without a GPU, as in CI): channels_last, bf16 autocast, data and
teacher outputs on the GPU, and a result that matches the CPU's closely."""

import pytest
import torch

from autodistill import parse_config
from autodistill.data import load_dataset
from autodistill.distill import evaluate, train
from autodistill.distill.train import device_of
from autodistill.students import build_student, make_spec
from autodistill.targets import TeacherTargets

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_kd_training_on_the_gpu():
    config = parse_config({"train": {"epochs": 5, "lr": 3e-3}})
    data = load_dataset(config.data)
    spec = make_spec("cnn", {"widths": [16, 32], "depths": [1, 1]}, data)
    teacher = build_student(spec, seed=1)
    train(teacher, data, config.train, seed=1, device="cuda")
    assert device_of(teacher).type == "cuda"
    convs = [p for p in teacher.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    logits = torch.cat([teacher(data.normalize(xb.cuda())).float().cpu() for xb in data.x_train.split(512)])
    student = build_student(spec, seed=0)
    history = train(student, data, config.train, config.distill, TeacherTargets(logits=logits.half()), seed=0, device="cuda")
    assert all(h.steps_s > 0 for h in history)
    gpu_accuracy = evaluate(student, data, "val")
    cpu_student = build_student(spec, seed=0)
    train(cpu_student, data, config.train, config.distill, TeacherTargets(logits=logits.half()), seed=0)
    assert gpu_accuracy > 0.85 and abs(gpu_accuracy - evaluate(cpu_student, data, "val")) < 0.05  # bf16 vs float32
