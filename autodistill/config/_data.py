"""``data:``: which dataset, its splits, and how images are held."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section
from ._options import DATA_STORAGE, DATASETS


class DataConfig(Section):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    """digits (bundled with scikit-learn), mnist, fashion_mnist, cifar10, cifar100, imagefolder"""
    root: str | None = None
    """directory of a torchvision dataset or of the imagefolder class folders"""
    download: bool = False
    """let torchvision download the dataset into ``root`` (needs internet)"""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """share of the training data held out for validation (what the search optimises)"""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """share held out for test, for datasets without an official test split (digits, imagefolder)"""
    image_size: int | None = Field(None, ge=4, le=1024)
    """imagefolder only: images are resized to this square size (default 64)"""
    split_seed: int = 0
    """seed of the stratified splits: fixed, so every trial sees the same splits"""
    max_train_samples: int | None = Field(None, ge=10)
    """use at most this many training samples (stratified), for quick studies"""
    storage: Literal[DATA_STORAGE] = "auto"  # type: ignore[valid-type]
    """imagefolder: memory = decoded once into uint8 tensors (batches cut by indexing); stream = decoded per batch from disk by a DataLoader (for folders that do not fit); auto = memory when it fits memory_limit_gb. Other datasets are always in memory"""
    memory_limit_gb: float = Field(8.0, gt=0)
    """the most decoded image data held in memory (data.storage auto / memory)"""
    workers: int = Field(2, ge=0, le=64)
    """DataLoader worker processes per trial that decode a streamed image folder (0 = in the trial's own process)"""

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(f"val_fraction + test_fraction must leave at least 10% for training, got {self.val_fraction} + {self.test_fraction}")
        if self.dataset != "digits" and self.root is None:
            raise ValueError(f"dataset {self.dataset!r} needs data.root (the directory holding it)")
        if self.image_size is not None and self.dataset != "imagefolder":
            raise ValueError("image_size applies to imagefolder only (other datasets keep their native size)")
        if self.storage == "stream" and self.dataset != "imagefolder":
            raise ValueError(f"storage: stream applies to imagefolder only ({self.dataset} is loaded into memory whole)")
        return self
