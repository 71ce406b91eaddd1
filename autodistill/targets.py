"""What trials need of the teacher(s): its outputs cached once per study, or the teacher
itself where it must see each batch. Produced by :mod:`autodistill.teacher`, read by the
training loop (:mod:`autodistill.distill.train`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class TeacherTargets:
    """What trials need of the teacher(s), computed once per study and handed to every trial
    through the Ray object store.

    ``logits`` (N_train, K) are the teacher's outputs on the un-augmented training set. With
    augmentation, either ``views`` (V, N_train, K), its outputs on V fixed augmented copies of
    the training set, with ``view_params`` (V, N_train, 3) describing each copy
    (:mod:`autodistill.augment`); or ``live``, the teacher itself, run on every augmented
    batch (and on every batch when ``logits`` is None: the benchmark's baseline). ``live`` is
    also set when feature or attention losses need the teacher's stage outputs: it is then run
    on a batch only where ``features`` cannot stand in for it.

    ``features``: the primary teacher's stage outputs on the un-augmented training set, one
    (N_train, C, H, W) tensor per stage, and ``attentions`` its self-attention matrices
    (N_train, heads, T, T) per block (a ViT teacher in a study with ``attention_type:
    matrix``); cached when they fit ``execution.teacher_cache_gb``. A trial without
    augmentation then never runs the teacher. The cached outputs are float16 (half the memory
    and object-store traffic; the KD loss moves by under 1e-3 relative, tested); the loss
    computes in float32.

    With several teachers (``teachers:``) ``logits`` is (M, N_train, K) and ``views``
    (M, V, N_train, K), in the config's order, ``weights`` their weights; ``live`` is the first
    and ``live_extra`` the others when all must run on every batch."""

    logits: torch.Tensor | None = None
    views: torch.Tensor | None = None
    view_params: torch.Tensor | None = None
    live: nn.Module | None = None
    source: str = ""
    weights: list[float] | None = None
    live_extra: list[nn.Module] | None = None
    features: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None

    @property
    def count(self) -> int:
        """How many teachers."""
        return 1 if self.weights is None else len(self.weights)

    @property
    def nbytes(self) -> int:
        return _nbytes([self.logits, self.views, self.view_params]) + self.feature_bytes

    @property
    def feature_bytes(self) -> int:
        return _nbytes([*(self.features or []), *(self.attentions or [])])


def _nbytes(tensors: list[torch.Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
