import pytest
import torch

from autodistill import CheckpointError, parse_config
from autodistill.data import load_dataset
from autodistill.students import build_student
from autodistill.teacher import cache_key, prepare_teacher, teacher_outputs, teacher_spec

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
