import pickle
import struct

import numpy as np
import pytest
import torch

from autodistill import ConfigError, DataError, parse_config
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


def test_digits_are_scikit_learns_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from autodistill.data import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    code = "import sys; from autodistill.data import digits_arrays; digits_arrays(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_stratified_split_is_scikit_learns_without_importing_it():
    """The split is train_test_split's, index for index, for fractions and counts, balanced
    and unbalanced classes, ties in the remainders and several seeds."""
    import subprocess
    import sys

    from sklearn.model_selection import train_test_split

    from autodistill.data import _stratified_split

    rng = np.random.default_rng(0)
    cases = [(np.arange(1797) % 10, 0.2), (np.arange(1437) % 10, 0.25), (np.arange(30) % 3, 7), (np.arange(12) % 4, 0.5)]
    for _ in range(40):
        k = int(rng.integers(2, 12))
        labels = rng.integers(0, k, int(rng.integers(4 * k, 300)))
        labels[: 2 * k] = np.repeat(np.arange(k), 2)  # every class twice at least
        cases.append((labels, float(rng.uniform(0.1, 0.6)) if rng.random() < 0.7 else int(rng.integers(k, len(labels) - k))))
    for i, (labels, held_out) in enumerate(cases):
        for seed in (0, 1, 12345):
            idx = np.arange(len(labels))
            keep, held = train_test_split(idx, test_size=held_out, stratify=labels, random_state=seed)
            ours = _stratified_split(labels, held_out, seed)
            assert np.array_equal(ours[0], np.sort(keep)) and np.array_equal(ours[1], np.sort(held)), (i, seed)
    with pytest.raises(DataError, match="single sample"):
        _stratified_split(np.array([0, 0, 1, 1, 2]), 0.4, 0)
    code = "import sys, numpy as np; from autodistill.data import _stratified_split; _stratified_split(np.arange(100) % 5, 0.2, 0); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


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


def _folder(root, per_class=12, classes=("cat", "dog", "eel")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_a_streamed_image_folder_gives_the_same_data_and_batches(tmp_path):
    from autodistill.data import ImageFiles, batches

    root = _folder(tmp_path / "imgs")
    memory = load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, storage="memory"))
    stream = load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, storage="stream", workers=2))
    assert isinstance(stream.x_train, ImageFiles) and not memory.streamed and stream.streamed
    assert "streamed from disk (2 DataLoader workers)" in stream.summary()
    assert stream.x_train.shape == memory.x_train.shape and stream.mean == memory.mean and stream.std == memory.std
    for split in ("train", "val", "test"):
        assert torch.equal(stream.split(split)[0][:], memory.split(split)[0]) and torch.equal(stream.split(split)[1], memory.split(split)[1])
    got = list(batches(stream.x_train, stream.y_train, 5, shuffle=True, generator=torch.Generator().manual_seed(3)))
    want = list(batches(memory.x_train, memory.y_train, 5, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(got) == len(want) == -(-len(memory.y_train) // 5)
    for (i1, x1, y1), (i2, x2, y2) in zip(got, want):
        assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_storage_auto_streams_a_folder_over_the_memory_limit(tmp_path):
    root = _folder(tmp_path / "imgs")
    need_gb = 36 * 3 * 16 * 16 / 2**30
    assert load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, memory_limit_gb=need_gb * 0.9)).streamed
    assert not load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, memory_limit_gb=need_gb * 1.1)).streamed
    with pytest.raises(DataError, match=r"data.storage: 36 images at 16px need 0.0 GiB in memory \(data.memory_limit_gb: "):
        load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, storage="memory", memory_limit_gb=need_gb * 0.9))


def test_streaming_applies_to_image_folders_only():
    with pytest.raises(ConfigError, match="data: storage: stream applies to imagefolder only"):
        data_cfg(storage="stream")


def test_training_on_a_streamed_folder_equals_training_in_memory(tmp_path):
    from autodistill.config import TrainConfig
    from autodistill.distill import train
    from autodistill.students import build_student, make_spec

    root = _folder(tmp_path / "imgs")
    runs = []
    for storage in ("memory", "stream"):
        data = load_dataset(data_cfg(dataset="imagefolder", root=str(root), image_size=16, storage=storage, workers=1))
        model = build_student(make_spec("cnn", {"widths": [4, 8], "depths": [1, 1]}, data), seed=0)
        runs.append([h.as_dict() for h in train(model, data, TrainConfig(epochs=2, batch_size=8), seed=0)])
    for a, b in zip(*runs):
        for key in ("accuracy", "loss", "loss_ce"):
            assert a[key] == b[key]
