"""Batch augmentation on tensors, the teacher's cached augmented views (FKD) and the live
teacher: the teacher always sees exactly the images the student trains on."""

import importlib

import pytest
import torch

from autodistill import parse_config
from autodistill._errors import ConfigError
from autodistill.augment import apply, check_augment, random_params, view_params
from autodistill.data import Dataset
from autodistill.distill import train
from autodistill.distill.losses import kd_per_sample
from autodistill.students import build_student, make_spec
from autodistill.teacher import outputs_key, teacher_outputs

train_module = importlib.import_module("autodistill.distill.train")  # the module; the package exports the function


def test_crop_and_flip_by_hand():
    x = torch.arange(2 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    params = torch.tensor([[0, 0, 0], [2, 1, 1]], dtype=torch.int16)  # (dy, dx, flip) in the image padded by 1
    out = apply(x, params, padding=1)
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]  # shifted down-right, zeros in
    assert out[1, 0].tolist() == [[23, 22, 21, 20], [27, 26, 25, 24], [31, 30, 29, 28], [0, 0, 0, 0]]  # up one, mirrored
    centre = torch.tensor([[1, 1, 0]] * 2, dtype=torch.int16)
    assert torch.equal(apply(x, centre, padding=1), x)
    rgb = torch.randint(0, 256, (3, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(apply(rgb, torch.tensor([[0, 0, 1]] * 3, dtype=torch.int16), 0), rgb.flip(-1))


def test_random_params_and_views_are_in_range_and_seeded():
    g = torch.Generator().manual_seed(0)
    p = random_params(1000, 4, True, g)
    assert p.dtype == torch.int16 and p[:, :2].min() == 0 and p[:, :2].max() == 8 and set(p[:, 2].tolist()) == {0, 1}
    assert (random_params(50, 2, False, g)[:, 2] == 0).all()
    assert torch.equal(view_params(30, 4, 2, True), view_params(30, 4, 2, True))
    assert view_params(30, 4, 2, True).shape == (4, 30, 3)


def test_small_images_are_refused():
    cfg = parse_config({"augment": {"flip": True}})
    with pytest.raises(ConfigError, match="at least 16 px; this dataset's are 8 px"):
        check_augment(cfg.augment, 8)
    check_augment(cfg.augment, 32)
    check_augment(parse_config({}).augment, 8)  # off: any size


def test_searched_augmentation_needs_a_live_teacher():
    with pytest.raises(ConfigError, match="crop_padding and flip must be fixed"):
        parse_config({"augment": {"flip": {"choice": [True, False]}}})
    parse_config({"augment": {"flip": {"choice": [True, False]}, "teacher": "live"}})


def _images(n=96, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 4
    return Dataset("synthetic", x, y, x[:32], y[:32], x[:32], y[:32], classes=list("abcd"), scale=255.0)


def _teacher(data):
    return build_student(make_spec("cnn", {"widths": [8, 16], "depths": [1, 1]}, data), seed=1).eval()


def _study(tmp_path, **augment):
    return parse_config({"augment": augment, "execution": {"results": str(tmp_path)}, "train": {"epochs": 2, "batch_size": 32}})


def test_cached_views_are_the_teachers_outputs_on_the_augmented_images(tmp_path):
    data, logs = _images(), []
    teacher = _teacher(data)
    config = _study(tmp_path, crop_padding=2, flip=True, views=3)
    targets = teacher_outputs(teacher, data, config, logs.append)
    assert targets.views.shape == (3, 96, 4) and targets.views.dtype == torch.float16 and targets.view_params.shape == (3, 96, 3)
    with torch.no_grad():
        for k in range(3):
            expected = teacher(data.normalize(apply(data.x_train, targets.view_params[k], 2)))
            assert torch.allclose(targets.views[k].float(), expected, atol=1e-2, rtol=1e-3)
    assert len(set(targets.view_params[:, :, :2].flatten().tolist())) > 1  # the views differ
    again = teacher_outputs(teacher, data, config, logs.append)
    assert again.source.startswith("cache") and torch.equal(again.views, targets.views)
    assert outputs_key(teacher, data, _study(tmp_path, crop_padding=2, flip=True, views=4)) != outputs_key(teacher, data, config)
    assert outputs_key(teacher, data, _study(tmp_path)) != outputs_key(teacher, data, config)


def test_float16_outputs_move_the_kd_loss_by_under_a_thousandth():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(256, 10, generator=g) * 6, torch.randn(256, 10, generator=g) * 6
    for t in (1.0, 4.0):
        exact = kd_per_sample(student, teacher, t).mean()
        half = kd_per_sample(student, teacher.half().float(), t).mean()
        assert abs(half - exact) / exact < 1e-3


@pytest.mark.parametrize("mode", ["views", "live"])
def test_the_teacher_sees_the_batch_the_student_trains_on(tmp_path, monkeypatch, mode):
    data = _images()
    teacher = _teacher(data)
    config = _study(tmp_path, crop_padding=2, flip=True, teacher=mode, views=2)
    targets = teacher_outputs(teacher, data, config, lambda m: None)
    assert (targets.live is not None) == (mode == "live") and (targets.views is not None) == (mode == "views")
    seen = []

    class Recorder(train_module.DistillLoss):
        def components(self, weights, logits, labels, **kw):
            seen.append(kw["teacher_stack"][0].detach().float())  # (M=1, B, K)
            return super().components(weights, logits, labels, **kw)

    inputs = []
    student = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
    student.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach().clone()) if mod.training else None)
    monkeypatch.setattr(train_module, "DistillLoss", Recorder)
    train(student, data, config.train, config.distill, targets, augment=config.augment, seed=3)
    assert len(seen) == len(inputs) == 6  # 2 epochs x 3 batches
    with torch.no_grad():
        for x, soft in zip(inputs, seen):
            assert torch.allclose(soft, teacher(x), atol=1e-2, rtol=1e-3)
    plain = data.normalize(data.x_train)
    assert not any(torch.equal(x, plain[: len(x)]) for x in inputs)  # the batches were augmented


def test_training_with_views_continues_exactly_after_a_checkpoint(tmp_path):
    data = _images()
    config = _study(tmp_path, crop_padding=2, flip=True, views=2)
    cfg3 = config.train.model_copy(update={"epochs": 3})
    targets = teacher_outputs(_teacher(data), data, config, lambda m: None)
    spec = make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data)
    straight = build_student(spec, seed=0)
    train(straight, data, cfg3, config.distill, targets, augment=config.augment, seed=5)
    saved = {}
    first = build_student(spec, seed=0)
    train(
        first,
        data,
        cfg3,
        config.distill,
        targets,
        augment=config.augment,
        seed=5,
        on_checkpoint=lambda state: saved.update({state["epoch"]: torch.utils._pytree.tree_map(lambda v: v.clone() if torch.is_tensor(v) else v, state)}),
    )
    resumed = build_student(spec, seed=0)
    train(resumed, data, cfg3, config.distill, targets, augment=config.augment, seed=5, resume=saved[1])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("channels_last", [True, False])
def test_cpu_training_runs_channels_last_and_hands_back_nchw(tmp_path, monkeypatch, channels_last):
    """The student and the live teacher run in channels_last while training on the CPU (the
    faster layout there) and are NCHW again afterwards, even when training raises; the
    switch that the layout benchmark's baseline turns off leaves them NCHW."""
    data = _images()
    config = _study(tmp_path, crop_padding=2, flip=True, teacher="live")
    teacher = _teacher(data)
    targets = teacher_outputs(teacher, data, config, lambda m: None)
    student = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
    seen = set()
    for name, net in (("student", student), ("teacher", teacher)):
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_pre_hook(lambda mod, args, name=name: seen.add((name, mod.weight.is_contiguous(memory_format=torch.channels_last))))
    monkeypatch.setattr(train_module, "CPU_CHANNELS_LAST", channels_last)
    history = train(student, data, config.train, config.distill, targets, augment=config.augment, seed=3)
    assert len(history) == 2 and history[-1].loss > 0
    assert seen == {("student", channels_last), ("teacher", channels_last)}
    for net in (student, teacher):
        assert all(p.is_contiguous() for p in net.parameters())

    def fail(stats):
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        train(student, data, config.train, config.distill, targets, augment=config.augment, seed=3, on_epoch=fail)
    assert all(p.is_contiguous() for net in (student, teacher) for p in net.parameters())


def test_a_teacher_whose_outputs_are_all_cached_is_left_as_it_is(tmp_path):
    data = _images()
    config = parse_config({"distill": {"feature_weight": 1.0}, "execution": {"results": str(tmp_path)}, "train": {"epochs": 1, "batch_size": 32}})
    teacher = _teacher(data)
    targets = teacher_outputs(teacher, data, config, lambda m: None)
    assert targets.live is teacher and targets.features is not None  # the stage outputs are cached: the teacher does not run
    student = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
    during = []
    train(student, data, config.train, config.distill, targets, seed=3, on_epoch=lambda s: during.append([p.is_contiguous() for p in teacher.parameters()]))
    assert during and all(all(c) for c in during)


def test_a_narrow_strided_1x1_convolution_trains_in_nchw_inside_a_channels_last_student(tmp_path):
    """oneDNN's strided 1x1 backward-weights kernels write past their workspace for a
    channels_last input with fewer than 16 input channels (a crash with one thread, wrong
    gradients with two): the shortcuts of the narrow stages stay NCHW and see NCHW inputs,
    the rest of the student runs in channels_last, and nothing is left hooked afterwards."""
    data = _images()
    config = _study(tmp_path)
    targets = teacher_outputs(_teacher(data), data, config, lambda m: None)
    student = build_student(make_spec("resnet", {"widths": [4, 16, 32], "depths": [1, 1, 1]}, data), seed=0)
    shortcuts = {name: m for name, m in student.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)}
    assert {m.in_channels for m in shortcuts.values()} == {4, 16} and all(m.stride == (2, 2) for m in shortcuts.values())
    seen = {}

    def nchw(t):  # by the strides themselves: a 1x1 kernel is "contiguous" in both layouts
        return t.stride() == torch.empty(t.shape).stride()

    def record(name, mod, args):
        seen.setdefault(name, (nchw(args[0]), nchw(mod.weight)))

    for name, conv in student.named_modules():
        if isinstance(conv, torch.nn.Conv2d):
            conv.register_forward_hook(lambda mod, args, out, name=name: record(name, mod, args))
    hooks = {name: len(m._forward_pre_hooks) for name, m in student.named_modules()}
    train(student, data, config.train, config.distill, targets, seed=4)
    narrow = next(name for name, m in shortcuts.items() if m.in_channels == 4)
    assert seen.pop(narrow) == (True, True)  # NCHW input, NCHW weight
    assert len(seen) == 8 and not any(weight for _, weight in seen.values())  # the 16-channel shortcut and every 3x3 conv: channels_last
    assert {name: len(m._forward_pre_hooks) for name, m in student.named_modules()} == hooks
    assert all(p.is_contiguous() for p in student.parameters())


def test_channels_last_changes_the_training_by_rounding_only(tmp_path, monkeypatch):
    data = _images()
    config = _study(tmp_path)
    targets = teacher_outputs(_teacher(data), data, config, lambda m: None)
    spec = make_spec("resnet", {"widths": [4, 8], "depths": [1, 1]}, data)
    runs = {}
    for channels_last in (False, True):
        monkeypatch.setattr(train_module, "CPU_CHANNELS_LAST", channels_last)
        model = build_student(spec, seed=0)
        history = train(model, data, config.train, config.distill, targets, seed=4)
        runs[channels_last] = ([h.loss for h in history], model.state_dict())
    (nchw_loss, nchw), (last_loss, last) = runs[False], runs[True]
    assert nchw_loss == pytest.approx(last_loss, rel=1e-4)
    for a, b in zip(nchw.values(), last.values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5)


def test_views_without_kd_still_augment(tmp_path):
    data = _images()
    config = _study(tmp_path, crop_padding=2, flip=True)
    model = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
    history = train(model, data, config.train, None, None, augment=config.augment, seed=0)
    assert len(history) == 2 and history[0].steps_s > 0 and history[0].steps_s <= history[0].epoch_s


def test_mixup_blends_pairs_and_cutmix_pastes_a_box_with_the_exact_share():
    from autodistill.augment import mix

    x = torch.arange(2 * 1 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    mixed, perm, lam = mix(x, 0.4, 0.0, torch.Generator().manual_seed(0))
    assert 0 <= lam <= 1 and torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    for seed in range(5):
        cut, perm, lam = mix(x, 0.0, 1.0, torch.Generator().manual_seed(seed))
        own = (cut == x).flatten(1).float().mean(dim=1)  # the pixels left of each image (the partners differ everywhere)
        if perm.tolist() == [1, 0]:
            assert own.tolist() == pytest.approx([lam, lam])
    same = mix(x, 0.4, 1.0, torch.Generator().manual_seed(3)), mix(x, 0.4, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(same[0][0], same[1][0]) and same[0][2] == same[1][2]  # a function of the generator
    assert mix(x, 0.0, 0.0, torch.Generator())[2] == 1.0


def test_mixup_needs_a_live_teacher_and_the_teacher_sees_the_mixed_batch(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="augment.teacher: live"):
        parse_config({"augment": {"mixup": 0.2}})
    parse_config({"augment": {"mixup": 0.2}, "distill": {"alpha": 0.0}})  # no teacher targets: nothing to cache
    data = _images()
    teacher = _teacher(data)
    config = _study(tmp_path, mixup=0.4, cutmix=1.0, teacher="live")
    targets = teacher_outputs(teacher, data, config, lambda m: None)
    seen, inputs = [], []

    class Recorder(train_module.DistillLoss):
        def components(self, weights, logits, labels, **kw):
            seen.append((kw["teacher_stack"][0].detach().clone(), kw["lam"], kw["labels_b"]))
            return super().components(weights, logits, labels, **kw)

    student = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
    student.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach().clone()) if mod.training else None)
    monkeypatch.setattr(train_module, "DistillLoss", Recorder)
    train(student, data, config.train, config.distill, targets, augment=config.augment, seed=3)
    assert len(seen) == len(inputs) == 6
    with torch.no_grad():
        for x, (soft, _lam, labels_b) in zip(inputs, seen):
            assert torch.allclose(soft, teacher(x), atol=1e-4) and labels_b is not None
    assert any(lam < 1 for _, lam, _ in seen)
