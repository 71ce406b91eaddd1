import pytest
import torch

from autodistill import CheckpointError, parse_config
from autodistill.data import load_dataset
from autodistill.students import build_student
from autodistill.teacher import cache_key, prepare_teacher, teacher_costs, teacher_outputs, teacher_spec

ARCH = {"family": "cnn", "widths": [8, 16], "depths": [1, 1]}


def cfg(tmp_path, **teacher):
    return parse_config(
        {
            "data": {"max_train_samples": 300},
            "teacher": {"arch": ARCH, "train": {"epochs": 2}, **teacher},
            "execution": {"results": str(tmp_path)},
        }
    )


def test_trained_once_then_loaded_from_cache(tmp_path):
    config = cfg(tmp_path)
    data = load_dataset(config.data)
    logs = []
    model, info = prepare_teacher(config, data, logs.append)
    assert info.source.startswith("trained")
    assert any("teacher epoch 2/2" in line for line in logs)
    again, info2 = prepare_teacher(config, data, logs.append)
    assert info2.source.startswith("cache")
    assert info2.val_accuracy == pytest.approx(info.val_accuracy)
    x = data.normalize(data.x_val[:4])
    assert torch.equal(model(x), again(x))
    targets = teacher_outputs(model, data, config, logs.append)
    assert targets.logits.shape == (len(data.y_train), 10) and targets.logits.dtype == torch.float16
    assert targets.views is None and targets.live is None and targets.source.startswith("computed")
    exact = model(data.normalize(data.x_train))
    assert torch.allclose(targets.logits.float(), exact, atol=1e-2, rtol=1e-3)  # float16 keeps ~3 significant digits
    cached = teacher_outputs(model, data, config, logs.append)  # a second study: read from disk
    assert cached.source.startswith("cache") and torch.equal(cached.logits, targets.logits)


def test_teacher_costs_are_counted_once_then_read(tmp_path, monkeypatch):
    import autodistill.teacher as teacher_module
    from autodistill.measure import static_costs

    config = cfg(tmp_path)
    model = build_student(teacher_spec(config, load_dataset(config.data)), seed=0)
    costs = teacher_costs(model, (1, 8, 8), config)
    assert costs == static_costs(model, (1, 8, 8)) and costs["macs"] > 0
    (path,) = (tmp_path / ".teachers" / "costs").glob("*.json")

    def never(*args):
        raise AssertionError("counted again")

    monkeypatch.setattr(teacher_module, "static_costs", never)
    assert teacher_costs(model, (1, 8, 8), config) == costs  # read back: no MAC count, no torch._dynamo
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights: another teacher
    with pytest.raises(AssertionError, match="counted again"):
        teacher_costs(model, (1, 8, 8), config)
    path.write_text("{not json")  # unreadable: counted again, not an error
    monkeypatch.setattr(teacher_module, "static_costs", static_costs)
    with torch.no_grad():
        next(model.parameters()).sub_(1.0)
    assert teacher_costs(model, (1, 8, 8), config) == costs


def test_cache_key_depends_on_what_determines_the_teacher(tmp_path):
    config = cfg(tmp_path)
    data = load_dataset(config.data)
    spec = teacher_spec(config, data)
    longer = parse_config({**config.model_dump(mode="json"), "teacher": {"arch": ARCH, "train": {"epochs": 3}}})
    assert cache_key(config, spec) != cache_key(longer, spec)
    assert cache_key(config, spec) == cache_key(cfg(tmp_path), spec)


def test_checkpoint_is_loaded_with_weights_only(tmp_path):
    config = cfg(tmp_path)
    data = load_dataset(config.data)
    model = build_student(teacher_spec(config, data))
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded, info = prepare_teacher(cfg(tmp_path, checkpoint=str(path)), data)
    assert info.source == f"checkpoint {path}"
    x = data.normalize(data.x_val[:4])
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    config = cfg(tmp_path)
    data = load_dataset(config.data)
    other = build_student({**teacher_spec(config, data), "dims": {"widths": [8, 32], "depths": [1, 1]}})
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"teacher.checkpoint .*\.pt: does not match the architecture cnn\(.*of other shape"):
        prepare_teacher(cfg(tmp_path, checkpoint=str(path)), data)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    config = cfg(tmp_path)
    data = load_dataset(config.data)
    model = build_student(teacher_spec(config, data))
    path = tmp_path / "truncated.pt"
    torch.save(model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="teacher.checkpoint: cannot read .*truncated.pt as a state dict"):
        prepare_teacher(cfg(tmp_path, checkpoint=str(path)), data)


def _feature_study(tmp_path, teacher_arch=ARCH, **distill):
    return parse_config(
        {
            "data": {"max_train_samples": 200},
            "teacher": {"arch": teacher_arch, "train": {"epochs": 1}},
            "distill": {"alpha": 0.5, "feature_weight": 1.0, "feature_stages": "all", **distill},
            "train": {"epochs": 2, "batch_size": 64},
            "execution": {"results": str(tmp_path)},
        }
    )


def test_stage_outputs_are_cached_once_per_study(tmp_path):
    config = _feature_study(tmp_path)
    data = load_dataset(config.data)
    model, _ = prepare_teacher(config, data, lambda m: None)
    targets = teacher_outputs(model, data, config, lambda m: None)
    _, exact, _ = model.forward_distill(data.normalize(data.x_train))
    assert len(targets.features) == len(exact) == 2 and targets.attentions == []
    for cached, want in zip(targets.features, exact):
        assert cached.dtype == torch.float16 and cached.shape == want.shape
        assert torch.allclose(cached.float(), want, atol=1e-2, rtol=1e-3)
    assert "stage outputs" in targets.source and "computed" in targets.source.split(";")[-1]
    assert targets.live is model  # still there: it gives the stage shapes and CAM weights
    again = teacher_outputs(model, data, config, lambda m: None)
    assert "from the cache" in again.source and all(torch.equal(a, b) for a, b in zip(again.features, targets.features))


def test_stage_outputs_over_the_limit_leave_the_teacher_live(tmp_path):
    config = parse_config({**_feature_study(tmp_path).model_dump(mode="json"), "execution": {"results": str(tmp_path), "teacher_cache_gb": 0}})
    data = load_dataset(config.data)
    model, _ = prepare_teacher(config, data, lambda m: None)
    targets = teacher_outputs(model, data, config, lambda m: None)
    assert targets.features is None and targets.live is model
    assert "runs live on every batch" in targets.source and "teacher_cache_gb: 0" in targets.source


def test_vit_attention_matrices_are_cached_for_matrix_attention(tmp_path):
    vit = {"family": "vit", "patch_size": 2, "embed_dim": 16, "depth": 2, "heads": 2}
    config = _feature_study(tmp_path, vit, feature_weight=0.0, attention_weight=1.0, attention_type="matrix")
    data = load_dataset(config.data)
    model, _ = prepare_teacher(config, data, lambda m: None)
    targets = teacher_outputs(model, data, config, lambda m: None)
    _, _, attns = model.forward_distill(data.normalize(data.x_train), True)
    assert len(targets.attentions) == 2 and targets.attentions[0].shape == attns[0].shape == (len(data.y_train), 2, 16, 16)
    assert torch.allclose(targets.attentions[1].float(), attns[1], atol=1e-3)


@pytest.mark.parametrize("attention_type", ["spatial", "cam"])
def test_training_with_cached_stage_outputs_never_runs_the_teacher(tmp_path, attention_type):
    from autodistill.distill import train
    from autodistill.students import make_spec

    config = _feature_study(tmp_path, attention_weight=10.0, attention_type=attention_type)
    data = load_dataset(config.data)
    model, _ = prepare_teacher(config, data, lambda m: None)
    targets = teacher_outputs(model, data, config, lambda m: None)
    calls = []
    forward = model.forward_distill

    def counted(*args, **kwargs):
        calls.append(len(args[0]))
        return forward(*args, **kwargs)

    model.forward_distill = counted
    spec = make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data)

    def run(t):
        student = build_student(spec, seed=0)
        return train(student, data, config.train, config.distill, t, seed=0)

    cached = run(targets)
    probes = len(calls)
    assert calls == [1]  # the loss probes the stage shapes on one image; no step ran the teacher
    live = run(type(targets)(logits=targets.logits, live=model))  # the same, with the teacher on every batch
    steps = 2 * -(-len(data.y_train) // 64)
    assert len(calls) - probes >= steps
    for a, b in zip(cached, live):  # float16 stage outputs move the losses by little
        assert a.extra["loss_feat"] == pytest.approx(b.extra["loss_feat"], rel=2e-2)
        assert a.extra["loss_att"] == pytest.approx(b.extra["loss_att"], rel=2e-2)
        assert a.loss_kd == pytest.approx(b.loss_kd, rel=2e-2)
