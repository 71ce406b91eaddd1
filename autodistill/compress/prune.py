"""Structural pruning: channels are physically removed, across coupled layers.

Torch-Pruning (Fang et al., DepGraph, CVPR 2023) builds the dependency graph of the
student, so that removing an output channel of a convolution also removes the matching
input channel of its consumers, the matching BatchNorm entries, and the same channel of
every layer tied to it by a residual addition or a depthwise convolution. The classifier's
outputs are never pruned.

Iterative pruning (``prune_steps: k``) removes an equal share of the original channels at
each step; a step is a fresh pruner on the current network, so a trial resumed from an epoch
checkpoint needs nothing but the network itself.

With ``prune_backend: nni`` NNI 3.0's pruners (``L1NormPruner``, ``L2NormPruner``,
``FPGMPruner``, ``TaylorPruner``) choose which channels go, and Torch-Pruning removes them:
NNI's own ``ModelSpeedup`` fails on torch 2.14 (see DESIGN.md), so its masks would never
become a smaller network.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable

import torch
import torch.nn as nn

from .._errors import ConfigError

GradFn = Callable[[nn.Module], None]
"""Runs forward and backward on a few training batches (fills ``.grad`` for Taylor)."""


IMPORTANCES = {
    "l1": lambda tp: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda tp: tp.importance.MagnitudeImportance(p=2),
    "fpgm": lambda tp: tp.importance.FPGMImportance(),
    "taylor": lambda tp: tp.importance.TaylorImportance(),
    "bn_scale": lambda tp: tp.importance.BNScaleImportance(),
    "random": lambda tp: tp.importance.RandomImportance(),
}
"""compress.importance -> Torch-Pruning's importance (given the torch_pruning module)"""


def _importance(name: str):
    import torch_pruning as tp

    try:
        return IMPORTANCES[name](tp)
    except KeyError:
        raise ValueError(f"unknown importance {name!r}; valid: {', '.join(IMPORTANCES)}") from None


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the class logits: never pruned."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


def step_ratio(total_rate: float, step: int, steps: int) -> float:
    """Share of the *current* channels to remove at ``step`` (1-based) of ``steps`` so that
    after step j a share ``total_rate * j / steps`` of the original channels is gone."""
    kept_before = 1 - total_rate * (step - 1) / steps
    kept_after = 1 - total_rate * step / steps
    return 1 - kept_after / kept_before


def layer_ratios(
    model: nn.Module, reference: nn.Module, rate: float, stage_rates: list[float] | None, step: int, steps: int, round_to: int = 1
) -> dict[str, float]:
    """{conv name: share of its *current* output channels to remove at ``step`` of ``steps``}.

    After step j each convolution keeps ``floor(original * (1 - r * j / steps))`` channels,
    ``r`` being its stage's rate (``stage_rates[i]`` for modules under ``stages.i``, else
    ``rate``); the last step therefore lands exactly on the one-shot count, however many
    steps it took (rounding does not pile up). With ``round_to`` > 1 that count is rounded to
    the nearest multiple of ``round_to`` (at least ``round_to``, at most the original)."""
    original = dict(reference.named_modules())
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or name not in original:
            continue
        r = rate
        if stage_rates is not None and name.startswith("stages."):
            r = stage_rates[int(name.split(".")[1])]
        target = math.floor(original[name].out_channels * (1 - r * step / steps) + 1e-9)
        if round_to > 1 and r > 0:
            target = min(original[name].out_channels, max(round_to, round(target / round_to) * round_to))
        # +0.5: the pruner keeps int(current * (1 - ratio)) channels, which is then `target`
        out[name] = max(0.0, 1 - (max(target, 1) + 0.5) / module.out_channels)
    return out


def stage_modules(model: nn.Module) -> list[nn.Module]:
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ConfigError("compress.prune_stage_rates needs a staged student (cnn, resnet, mobilenet)")
    return list(stages)


def prune_step(
    model: nn.Module,
    example: torch.Tensor,
    *,
    ratios: dict[str, float] | None,
    global_ratio: float,
    stage_ratios: list[float] | None,
    importance: str,
    num_classes: int,
    round_to: int = 1,
    grad_fn: GradFn | None = None,
    backend: str = "torch_pruning",
) -> None:
    """Remove channels from ``model`` in place, ranked by ``importance``: ``ratios[name]`` of
    each convolution's output channels (:func:`layer_ratios`), or with ``ratios=None``
    ``global_ratio`` of all channels ranked together (within each stage, by
    ``stage_ratios``, when given)."""
    if ratios is not None and not any(r > 0 for r in ratios.values()):
        return
    if ratios is None and global_ratio <= 0 and not any(r > 0 for r in stage_ratios or []):
        return
    was_training = model.training
    model.eval()  # tracing the graph runs a forward: it must not move the BN statistics
    try:
        if importance == "taylor":
            if grad_fn is None:
                raise ValueError("taylor importance needs gradients (grad_fn)")
            model.zero_grad(set_to_none=True)
            if backend != "nni":  # NNI's Taylor pruner runs the batches itself
                grad_fn(model)
        if backend == "nni":
            _prune_with_nni_masks(model, example, ratios, importance, grad_fn)
        else:
            _prune_torch_pruning(model, example, ratios, global_ratio, stage_ratios, importance, num_classes, round_to)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _prune_torch_pruning(model, example, ratios, global_ratio, stage_ratios, importance, num_classes, round_to) -> None:
    import torch_pruning as tp

    modules = dict(model.named_modules())
    if ratios is not None:  # each layer its own share
        ratio_dict = {modules[name]: r for name, r in ratios.items()}
    elif stage_ratios is not None:  # ranked together within each stage
        ratio_dict = {stage: r for stage, r in zip(stage_modules(model), stage_ratios)}
    else:
        ratio_dict = None
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=_importance(importance),
        pruning_ratio=0.0 if ratios is not None else global_ratio,
        pruning_ratio_dict=ratio_dict,
        global_pruning=ratios is None,
        max_pruning_ratio=0.95,  # global ranking may empty a layer otherwise
        ignored_layers=classifier_layers(model, num_classes),
        round_to=round_to if ratios is None and round_to > 1 else None,  # per-layer targets are rounded already
    )
    pruner.step()


# --- NNI chooses, Torch-Pruning removes -------------------------------------------------------
_NNI_PRUNERS = {"l1": "L1NormPruner", "l2": "L2NormPruner", "fpgm": "FPGMPruner", "taylor": "TaylorPruner"}


NNI_MISSING = "compress.prune_backend: nni is not installed; pip install 'autodistill[nni]' (or use torch_pruning)"


def nni_available() -> bool:
    return importlib.util.find_spec("nni") is not None


def _nni_masks(model, ratios, importance, grad_fn) -> dict[str, torch.Tensor]:
    """{conv name: bool mask of kept output channels}, as NNI's pruner chose them."""
    if not nni_available():
        raise ConfigError(NNI_MISSING)
    import nni.compression.pruning as nni_pruning

    config_list = [{"op_names": [name], "sparse_ratio": r} for name, r in ratios.items() if r > 0]
    work = copy.deepcopy(model)  # NNI wraps the modules it prunes; the student stays clean
    pruner_cls = getattr(nni_pruning, _NNI_PRUNERS[importance])
    if importance == "taylor":
        pruner = pruner_cls(work, config_list, _nni_evaluator(work, grad_fn), training_steps=1)
    else:
        pruner = pruner_cls(work, config_list)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    out = {}
    for name, mask in masks.items():
        weight_mask = mask.get("weight")
        if weight_mask is not None and weight_mask.ndim == 4:
            out[name] = weight_mask.flatten(1).abs().sum(dim=1) > 0  # (C_out,) kept channels
    return out


def _nni_evaluator(model: nn.Module, grad_fn: GradFn | None):
    import nni
    from nni.compression import TorchEvaluator

    if grad_fn is None:
        raise ValueError("taylor importance needs gradients (grad_fn)")

    def training(model, optimizers, criterion, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_steps or 1):
            optimizers.zero_grad()
            grad_fn(model)  # backward on training batches: NNI's hooks collect the Taylor scores
            optimizers.step()

    optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0)  # scores only: weights stay
    return TorchEvaluator(training, optimizer, nn.CrossEntropyLoss())


def _prune_with_nni_masks(model, example, ratios, importance, grad_fn) -> None:
    import torch_pruning as tp

    if ratios is None:
        raise ConfigError("compress.prune_global is not available with prune_backend nni")
    keep = _nni_masks(model, ratios, importance, grad_fn)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    done: set[int] = set()
    for name, kept in keep.items():
        conv = modules[name]
        if id(conv) in done or kept.all():
            continue
        idxs = [int(i) for i in torch.nonzero(~kept).flatten()]
        if len(idxs) >= conv.out_channels:
            idxs = idxs[1:]  # never empty a layer
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs)
        # layers coupled to this one (residual adds, depthwise convs) lose the same channels:
        # the first of them NNI scored decides, the others are not pruned again
        done.update(id(dep.target.module) for dep, _ in group)
        if graph.check_pruning_group(group):
            group.prune()
