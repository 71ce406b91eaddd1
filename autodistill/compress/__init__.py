"""Compression inside a trial: structural pruning during training, then INT8.

:class:`Compression` is driven by the training loop (:func:`autodistill.distill.train`):
before each epoch it may remove channels (``compress.prune_*``) or start quantization-aware
training; after the last epoch :meth:`Compression.finish` calibrates and converts to int8.
What it did is recorded in the student's spec (``spec["compress"]``), from which
:func:`autodistill.students.build_student` rebuilds the compressed network exactly.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from .._errors import CheckpointError
from ..config import CompressConfig
from ..students import build_student
from .prune import layer_ratios, prune_step, step_ratio
from .quantize import QUANT_FLOW, calibrate, convert, prepare_ptq, prepare_qat, quantized_skeleton
from .structure import apply_shapes, layer_shapes

__all__ = ["Compression", "describe", "prune_schedule", "rebuild", "observers_frozen"]


def prune_schedule(cfg: CompressConfig, epochs: int) -> tuple[list[int], int | None]:
    """(epochs before which a pruning step runs, epoch before which QAT starts), 1-based.

    Pruning starts after ``floor(prune_at * epochs)`` epochs, one step per epoch, moved
    earlier when needed so that at least one epoch fine-tunes after the last step. QAT starts
    after ``floor(qat_start * epochs)`` epochs, and never before the last pruning step."""
    prune_epochs: list[int] = []
    if cfg.prunes:
        if cfg.prune_steps >= epochs:
            raise ValueError(f"compress.prune_steps ({cfg.prune_steps}) needs at least {cfg.prune_steps + 1} train.epochs, got {epochs}")
        first = min(math.floor(cfg.prune_at * epochs), epochs - 1 - cfg.prune_steps) + 1
        prune_epochs = list(range(first, first + cfg.prune_steps))
    qat_epoch = None
    if cfg.quantize == "qat":
        qat_epoch = max(math.floor(cfg.qat_start * epochs) + 1, prune_epochs[-1] if prune_epochs else 1)
        qat_epoch = min(qat_epoch, epochs)
    return prune_epochs, qat_epoch


class Compression:
    """Prunes and quantizes one student during its training (see module doc).

    ``model`` is always the network to train and evaluate now: pruning changes it in place,
    QAT and :meth:`finish` replace it."""

    def __init__(self, cfg: CompressConfig, spec: dict[str, Any], epochs: int, data, batch_size: int, model: nn.Module):
        if getattr(model, "is_transformer", False):
            raise ValueError(f"compress: pruning and int8 of a {spec['family']} student are not supported (convolutional families only)")
        self.cfg = cfg
        self.spec = spec
        self.data = data
        self.batch_size = batch_size
        self.model = model
        self.reference = build_student(spec, seed=0)  # the unpruned shapes (seeded: the training RNG is not touched)
        self.example = data.normalize(data.x_train[:8])  # (8, C, H, W): traced by the pruner and the quantizer
        self.prune_epochs, self.qat_epoch = prune_schedule(cfg, epochs)
        self.layers: dict[str, dict[str, int]] = {}
        self.qat = False
        self.quantized = False

    # -- training-time ---------------------------------------------------------------------
    def before_epoch(self, epoch: int) -> bool:
        """Prune or start QAT before ``epoch`` (1-based) if the schedule says so; True when
        the network's parameters changed (the optimizer must be rebuilt)."""
        changed = False
        if epoch in self.prune_epochs:
            step, steps = self.prune_epochs.index(epoch) + 1, len(self.prune_epochs)
            cfg = self.cfg
            prune_step(
                self.model,
                self.example,
                ratios=None if cfg.prune_global else layer_ratios(self.model, self.reference, cfg.prune_rate, cfg.prune_stage_rates, step, steps, cfg.round_to),
                global_ratio=step_ratio(cfg.prune_rate, step, steps),
                stage_ratios=[step_ratio(r, step, steps) for r in cfg.prune_stage_rates] if cfg.prune_stage_rates else None,
                importance=cfg.importance,
                num_classes=self.spec["num_classes"],
                round_to=cfg.round_to,
                grad_fn=self._gradients,
                backend=cfg.prune_backend,
            )
            self.layers = layer_shapes(self.model, self.reference)
            changed = True
        if epoch == self.qat_epoch:
            self.model = prepare_qat(self.model, self.example, self.cfg.engine, self.cfg.reduce_range)
            self.qat = changed = True
        return changed

    def _gradients(self, model: nn.Module, batches: int = 4) -> None:
        """Cross-entropy backward over the first few training batches (Taylor importance)."""
        was_training = model.training
        model.train()
        x, y = self.data.x_train, self.data.y_train
        for i in range(min(batches, math.ceil(len(y) / self.batch_size))):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            nn.functional.cross_entropy(model(self.data.normalize(x[sl])), y[sl]).backward()
        model.train(was_training)

    def state(self) -> dict[str, Any]:
        """What an epoch checkpoint needs to rebuild this network: see :meth:`restore`."""
        return {"layers": self.layers, "qat": self.qat}

    def restore(self, state: dict[str, Any] | None) -> nn.Module:
        """Give the fresh ``model`` the structure it had when ``state`` was saved."""
        if state:
            self.layers = state.get("layers") or {}
            apply_shapes(self.model, self.layers, "epoch checkpoint")
            if state.get("qat"):
                self.model = prepare_qat(self.model, self.example, self.cfg.engine, self.cfg.reduce_range)
                self.qat = True
        return self.model

    # -- after training --------------------------------------------------------------------
    def finish(self) -> nn.Module:
        """The final network: int8 after PTQ calibration or QAT, else the (pruned) float one."""
        method = self.cfg.quantize
        if method == "ptq":
            prepared = prepare_ptq(self.model, self.example, self.cfg.engine, self.cfg.reduce_range)
            x = self.data.x_train
            calibrate(
                prepared,
                (
                    self.data.normalize(x[i : i + self.batch_size])
                    for i in range(0, min(len(x), self.cfg.calibration_batches * self.batch_size), self.batch_size)
                ),
            )
            self.model = convert(prepared)
        elif method == "qat":
            self.model = convert(self.model)
        self.quantized = method != "none"
        return self.model

    def float_model(self) -> nn.Module:
        """The pruned float network (fresh weights): for params and MACs of the final one.
        Built under its own seed: called between epochs, it must not move the training RNG."""
        return build_network(self.compressed_spec(quantized=False), seed=0)

    def compressed_spec(self, quantized: bool | None = None) -> dict[str, Any]:
        """The student's spec with what was done to it (``compress``)."""
        quantized = self.quantized if quantized is None else quantized
        compress: dict[str, Any] = {}
        if self.layers:
            compress["layers"] = self.layers
        if quantized:
            compress["quantize"] = {"method": self.cfg.quantize, "engine": self.cfg.engine, "flow": QUANT_FLOW}
            if self.cfg.reduce_range:  # 7-bit weights; absent in specs written before the option (8 bits)
                compress["quantize"]["reduce_range"] = True
        return {**self.spec, "compress": compress} if compress else dict(self.spec)


def build_network(spec: dict[str, Any], seed: int | None = None) -> nn.Module:
    """:func:`~autodistill.students.build_student` for any student spec: one with a
    ``compress`` entry (a pruned and/or int8 student) is rebuilt with the recorded layer shapes
    and quantized structure, ready for ``load_state_dict`` of its saved weights. With ``seed``
    the initial weights are a function of the seed alone (the global RNG is left as it was)."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_network(spec)
    model = build_student({k: v for k, v in spec.items() if k != "compress"})
    return rebuild(model, spec) if spec.get("compress") else model


def rebuild(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Apply ``spec["compress"]`` to a freshly built float network (see module doc)."""
    compress = spec.get("compress") or {}
    apply_shapes(model, compress.get("layers") or {})
    quant = compress.get("quantize")
    if quant:
        if quant.get("flow") != QUANT_FLOW:
            raise CheckpointError(
                f"this int8 student was saved by torch.ao's FX graph mode quantization (engine {quant.get('engine')}), which autodistill no longer reads "
                "(it quantizes with PT2E now); train it again, e.g. autodistill resume with more trials, or export it with an autodistill release before PT2E"
            )
        example = torch.zeros(2, spec["in_channels"], spec["image_size"], spec["image_size"])
        model = quantized_skeleton(model, example, quant["method"], quant["engine"], quant.get("reduce_range", False))
    return model


def describe(spec: dict[str, Any]) -> str:
    """What was done to a student, in a few words: ``pruned + int8 (ptq)``, ``-`` for nothing."""
    compress = spec.get("compress") or {}
    parts = ["pruned"] if compress.get("layers") else []
    if compress.get("quantize"):
        parts.append(f"int8 ({compress['quantize']['method']})")
    return " + ".join(parts) or "-"


@contextmanager
def observers_frozen(model: nn.Module):
    """Evaluation of a QAT network must not move its quantization ranges (FakeQuantize
    observes whenever its observer is on, in eval mode too)."""
    from torchao.quantization.pt2e import disable_observer, enable_observer

    model.apply(disable_observer)
    try:
        yield
    finally:
        model.apply(enable_observer)
