import pickle
import struct

import numpy as np
import pytest
import torch

from autodistill import DataError, parse_config
from autodistill.data import batches, load_dataset


def data_cfg(**kw):
    return parse_config({"data": kw}).data


def test_digits_splits_are_stratified_disjoint_and_fixed():
    d = load_dataset(data_cfg())
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape[1:] == (1, 8, 8)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 1797
    assert len(d.y_test) == 360 and len(d.y_val) == 360
    assert d.num_classes == 10 and d.scale == 16.0
    # every class in every split, in about the same share
    for y in (d.y_train, d.y_val, d.y_test):
        counts = torch.bincount(y, minlength=10).float() / len(y)
        assert counts.min() > 0.08 and counts.max() < 0.12
    again = load_dataset(data_cfg())
    assert torch.equal(d.x_val, again.x_val)
    other = load_dataset(data_cfg(split_seed=1))
    assert not torch.equal(d.y_val, other.y_val)
    # normalised training data is standardised per channel
    x = d.normalize(d.x_train)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2


def test_max_train_samples_subsamples_train_only():
    d = load_dataset(data_cfg(max_train_samples=200))
    assert len(d.y_train) == 200 and len(d.y_val) == 360


def test_batches_cover_every_index_once():
    x, y = torch.arange(10).view(10, 1, 1, 1), torch.arange(10)
    seen = torch.cat([idx for idx, xb, yb in batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def _write_idx(path, array, magic):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape))
        fh.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_style_from_real_idx_files(tmp_path, dataset, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    d = load_dataset(data_cfg(dataset=dataset, root=str(tmp_path)))
    assert d.x_train.shape[1:] == (1, 28, 28)
    assert len(d.y_train) + len(d.y_val) == 200 and len(d.y_test) == 50
    assert d.num_classes == 10


def test_cifar10_from_real_pickle_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 20) for i in range(1, 6)), ("test_batch", 30)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(np.arange(n) % 10)}
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    # The files are in the real format, but cannot match torchvision's md5 list.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    d = load_dataset(data_cfg(dataset="cifar10", root=str(tmp_path)))
    assert d.x_train.shape[1:] == (3, 32, 32) and d.x_train.dtype == torch.uint8
    assert len(d.y_train) + len(d.y_val) == 100 and len(d.y_test) == 30
    assert d.classes[0] == "c0"


def test_missing_torchvision_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.root: mnist not found or corrupt under"):
        load_dataset(data_cfg(dataset="mnist", root=str(tmp_path)))
    with pytest.raises(DataError, match="data.root: directory not found"):
        load_dataset(data_cfg(dataset="cifar10", root=str(tmp_path / "nope")))


def test_imagefolder_resizes_and_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset(data_cfg(dataset="imagefolder", root=str(tmp_path), image_size=16, val_fraction=0.2, test_fraction=0.2))
    assert d.x_train.shape[1:] == (3, 16, 16)
    assert d.classes == ["cat", "dog"]
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 20
