"""Datasets as in-memory tensors with fixed stratified splits.

Images stay ``uint8`` (N, C, H, W) and are normalised per batch, so CIFAR-10's 50,000
training images take 150 MB rather than 600 MB. A :class:`Dataset` is loaded once by the
driver and handed to every trial through the Ray object store.

An image folder too large for memory (``data.storage``) is streamed instead: each split is an
:class:`ImageFiles`, which stands for the uint8 tensor where the code indexes it, and whose
batches are decoded by a torch ``DataLoader`` with ``data.workers`` worker processes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ._errors import DataError
from .config import DataConfig

DEFAULT_IMAGEFOLDER_SIZE = 64
STATS_SAMPLE = 2048  # images of a streamed training split that the normalisation statistics are taken from


def tensor_buffer(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's bytes for hashing, without a copy where it is contiguous on the CPU."""
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()


def _decode(path: str, size: int) -> torch.Tensor:
    """One image file as a uint8 (3, size, size) tensor (RGB, bilinear resize)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("RGB").resize((size, size), Image.BILINEAR))
    except OSError as err:
        raise DataError(f"data.root: cannot read image {path}: {err}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class ImageFiles(torch.utils.data.Dataset):
    """A split of an image folder, decoded on demand: indexed like the uint8 (N, 3, S, S)
    tensor it stands for (an int, a slice or an index tensor gives the decoded images), and
    batched by :meth:`batches` through a ``DataLoader`` (``workers`` processes decode while
    the model trains)."""

    dtype = torch.uint8

    def __init__(self, paths: list[str], size: int, workers: int):
        self.paths, self.size, self.workers = list(paths), size, workers

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.size, self.size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, int):
            return _decode(self.paths[index], self.size)
        picks = range(len(self.paths))[index] if isinstance(index, slice) else torch.as_tensor(index).reshape(-1).tolist()
        if not len(picks):
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.stack([_decode(self.paths[i], self.size) for i in picks])

    def subset(self, indices) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in np.asarray(indices).tolist()], self.size, self.workers)

    def to(self, *args, **kwargs) -> ImageFiles:
        return self  # batches move to the device as they are decoded

    def fingerprint(self) -> bytes:
        """What identifies the images: paths, sizes, modification times and the decode size."""
        digest = hashlib.sha256(str(self.size).encode())
        for path in self.paths:
            stat = Path(path).stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.digest()

    def batches(self, y: torch.Tensor, order: torch.Tensor, batch_size: int):
        chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        loader = DataLoader(self, batch_sampler=[c.tolist() for c in chunks], num_workers=self.workers, prefetch_factor=4 if self.workers else None)
        for idx, xb in zip(chunks, loader):
            yield idx, xb, y[idx]


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    scale: float  # raw value of full intensity: 16 for digits, 255 for 8-bit images
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.mean:
            x = self.x_train
            if isinstance(x, ImageFiles):  # evenly spaced images, not the whole folder
                x = x[torch.linspace(0, len(x) - 1, min(len(x), STATS_SAMPLE)).round().long()]
            x = x.float() / self.scale  # (N, C, H, W)
            self.mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(max(s, 1e-6) for s in x.std(dim=(0, 2, 3)).tolist())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float, scaled to [0, 1] then standardised per channel."""
        mean = torch.tensor(self.mean, device=xb.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=xb.device).view(1, -1, 1, 1)
        return (xb.float() / self.scale - mean) / std

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    @property
    def streamed(self) -> bool:
        return isinstance(self.x_train, ImageFiles)

    def summary(self) -> str:
        c, h, w = self.x_train.shape[1:]
        where = f", streamed from disk ({self.x_train.workers} DataLoader workers)" if self.streamed else ""
        return f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test, {c}x{h}x{w}, {self.num_classes} classes{where}"

    def train_digest(self):
        """Identifies the training images (for the teacher-outputs cache), from the tensor's
        bytes or a streamed folder's file list."""
        if self.streamed:
            return self.x_train.fingerprint()
        return tensor_buffer(self.x_train)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (indices, x, y) batches by indexing the tensors (no DataLoader, no workers); a
    streamed split (:class:`ImageFiles`) is decoded by its DataLoader, in the same order."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if isinstance(x, ImageFiles):
        yield from x.batches(y, order, batch_size)
        return
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield idx, x[idx], y[idx]


def _stratified_split(labels: np.ndarray, held_out: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) sorted indices; ``held_out`` is a fraction or a number of samples.

    The same split as scikit-learn's ``train_test_split(..., stratify=labels,
    random_state=seed)`` (its StratifiedShuffleSplit, step for step; ``tests/test_data.py``
    compares the two), without importing scikit-learn: that import is a second of every
    study's start-up."""
    n = len(labels)
    n_held = math.ceil(held_out * n) if isinstance(held_out, float) else int(held_out)
    n_keep = n - n_held

    def refuse(why: str) -> DataError:
        return DataError(f"data: cannot make a stratified split of {n} samples: {why}")

    if not 0 < n_held < n:
        raise refuse(f"holding out {held_out} leaves no samples on one side")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise refuse(f"classes {classes[counts < 2].tolist()} have a single sample (at least 2 are needed)")
    if min(n_keep, n_held) < len(classes):
        raise refuse(f"{min(n_keep, n_held)} samples on one side for {len(classes)} classes")
    per_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    keep_counts = _approximate_mode(counts, n_keep, rng)
    held_counts = _approximate_mode(counts - keep_counts, n_held, rng)
    keep: list[int] = []
    held: list[int] = []
    for members, k, h in zip(per_class, keep_counts, held_counts):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        keep.extend(shuffled[:k])
        held.extend(shuffled[k : k + h])
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` samples each class gets: its floored share, then one more each
    for the largest remainders, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1] if need > 0 else ():
        (tied,) = np.where(remainder == value)
        now = min(len(tied), need)
        floored[rng.choice(tied, size=now, replace=False)] += 1
        need -= now
        if need == 0:
            break
    return floored.astype(int)


def _take(x, indices: np.ndarray):
    """Rows of an image tensor, or the files of a streamed split."""
    return x.subset(indices) if isinstance(x, ImageFiles) else x[indices]


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= len(y):
        return x, y
    keep, _ = _stratified_split(y.numpy(), len(y) - n, seed)
    return _take(x, keep), y[keep]


def _from_pool(name: str, x: torch.Tensor, y: torch.Tensor, classes: list[str], scale: float, cfg: DataConfig) -> Dataset:
    """train/val/test from one pool (datasets without an official test split)."""
    rest, test = _stratified_split(y.numpy(), cfg.test_fraction, cfg.split_seed)
    val_share = cfg.val_fraction / (1 - cfg.test_fraction)
    train, val = _stratified_split(y[rest].numpy(), val_share, cfg.split_seed)
    train, val = rest[train], rest[val]
    x_tr, y_tr = _subsample(_take(x, train), y[train], cfg.max_train_samples, cfg.split_seed)
    return Dataset(name, x_tr, y_tr, _take(x, val), y[val], _take(x, test), y[test], classes, scale)


def _with_official_test(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    classes: list[str],
    cfg: DataConfig,
) -> Dataset:
    train, val = _stratified_split(y.numpy(), cfg.val_fraction, cfg.split_seed)
    x_tr, y_tr = _subsample(x[train], y[train], cfg.max_train_samples, cfg.split_seed)
    return Dataset(name, x_tr, y_tr, x[val], y[val], x_test, y_test, classes, 255.0)


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 16 grey levels): no download."""
    images, target = digits_arrays()
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(target.astype(np.int64))
    return _from_pool("digits", x, y, [str(c) for c in range(10)], 16.0, cfg)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8), target (1797,)) of scikit-learn's digits, read from the CSV file
    scikit-learn ships (what ``sklearn.datasets.load_digits`` reads) without importing
    scikit-learn, which takes seconds; through scikit-learn if the file is not where expected."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec and spec.submodule_search_locations else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        return bunch.images, bunch.target
    data = np.loadtxt(csv, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _torchvision_split(cls: type, root: str, train: bool, download: bool, dataset: str):
    try:
        return cls(root=root, train=train, download=download)
    except RuntimeError as err:
        if "not found" in str(err).lower() or "corrupted" in str(err).lower():
            raise DataError(
                f"data.root: {dataset} not found or corrupt under {root!r} (place the torchvision files there, or set data.download: true with internet access)"
            ) from None
        raise DataError(f"data.root: cannot read {dataset} under {root!r}: {err}") from None
    except OSError as err:
        raise DataError(f"data.root: cannot read {dataset} under {root!r}: {err}") from None


def _as_nchw(data) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(data))
    if x.dim() == 3:  # (N, H, W) grey
        return x.unsqueeze(1).contiguous()
    return x.permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


def load_torchvision(cfg: DataConfig) -> Dataset:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[cfg.dataset]
    root = str(Path(cfg.root).expanduser())
    if not cfg.download and not Path(root).is_dir():
        raise DataError(f"data.root: directory not found: {cfg.root}")
    train = _torchvision_split(cls, root, True, cfg.download, cfg.dataset)
    test = _torchvision_split(cls, root, False, cfg.download, cfg.dataset)
    x, y = _as_nchw(train.data), torch.as_tensor(np.asarray(train.targets), dtype=torch.int64)
    x_test, y_test = _as_nchw(test.data), torch.as_tensor(np.asarray(test.targets), dtype=torch.int64)
    return _with_official_test(cfg.dataset, x, y, x_test, y_test, list(train.classes), cfg)


def load_imagefolder(cfg: DataConfig) -> Dataset:
    """A directory of class folders (torchvision ImageFolder), resized to ``image_size``: decoded
    into memory, or streamed from disk when it would not fit (``data.storage``)."""
    import torchvision.datasets as tvd

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: directory not found: {cfg.root}")
    try:
        folder = tvd.ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"data.root: {err}") from None
    size = cfg.image_size or DEFAULT_IMAGEFOLDER_SIZE
    need = len(folder.samples) * 3 * size * size
    files = ImageFiles([path for path, _ in folder.samples], size, cfg.workers)
    y = torch.tensor(folder.targets, dtype=torch.int64)
    stream = cfg.storage == "stream" or (cfg.storage == "auto" and need > cfg.memory_limit_gb * 2**30)
    if cfg.storage == "memory" and need > cfg.memory_limit_gb * 2**30:
        raise DataError(
            f"data.storage: {len(folder.samples)} images at {size}px need {need / 2**30:.1f} GiB in memory "
            f"(data.memory_limit_gb: {cfg.memory_limit_gb:g}); set data.storage: auto or stream, lower image_size or raise the limit"
        )
    if stream:
        if files.paths:
            _decode(files.paths[0], size)  # an unreadable folder fails here, not in a trial
        return _from_pool("imagefolder", files, y, list(folder.classes), 255.0, cfg)
    x = torch.empty(len(folder.samples), 3, size, size, dtype=torch.uint8)
    for i in range(len(files)):
        x[i] = files[i]
    return _from_pool("imagefolder", x, y, list(folder.classes), 255.0, cfg)


LOADERS = {
    "digits": load_digits,
    "mnist": load_torchvision,
    "fashion_mnist": load_torchvision,
    "cifar10": load_torchvision,
    "cifar100": load_torchvision,
    "imagefolder": load_imagefolder,
}
"""data.dataset -> its loader"""


def load_dataset(cfg: DataConfig) -> Dataset:
    return LOADERS[cfg.dataset](cfg)
