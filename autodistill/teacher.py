"""The teacher: loaded from a checkpoint, or trained once and cached by a hash of what
determines it (data, architecture, training config)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import _io, layout
from .augment import apply, view_params
from .checkpoints import arch_name, load_state_dict, load_weights
from .config import StudyConfig, TeacherConfig, TrainConfig, choices
from .data import Dataset, batches, tensor_buffer
from .distill import evaluate, train
from .distill.recipe import teacher_forward
from .measure import count_params, static_costs
from .students import build_student, make_spec
from .targets import TeacherTargets

CACHE_VERSION = 1  # bump when the teacher training code changes what it produces


@dataclass
class TeacherInfo:
    spec: dict[str, Any]
    params: int
    val_accuracy: float
    test_accuracy: float
    source: str  # "checkpoint <path>" or "trained" / "cache <path>"
    path: str


def compute_device(config: StudyConfig) -> str:
    """Where the study trains: CUDA when trials are given GPUs (``search.resources.gpu``) and
    one is visible, else the CPU."""
    return "cuda" if config.search.resources.gpu > 0 and torch.cuda.is_available() else "cpu"


def teacher_spec(config: StudyConfig, data: Dataset, teacher: TeacherConfig | None = None) -> dict[str, Any]:
    arch = (teacher or config.teacher).arch
    family = arch if isinstance(arch, str) else arch["family"]
    dims = {} if isinstance(arch, str) else {k: v for k, v in arch.items() if k != "family"}
    return make_spec(family, dims, data)


def cache_key(config: StudyConfig, spec: dict[str, Any], teacher: TeacherConfig | None = None) -> str:
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            # where images live does not change them
            "data": config.data.model_dump(mode="json", exclude={"download", "storage", "memory_limit_gb", "workers"}),
            "spec": spec,
            "train": (teacher or config.teacher).train.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_teacher(
    config: StudyConfig, data: Dataset, log: Callable[[str], None] = print, teacher: TeacherConfig | None = None
) -> tuple[nn.Module, TeacherInfo]:
    """The teacher ``teacher`` (default: the study's primary one), loaded or trained."""
    tcfg = teacher or config.teacher
    spec = teacher_spec(config, data, tcfg)
    model = build_student(spec, seed=tcfg.train.seed)
    if tcfg.checkpoint:
        path = tcfg.checkpoint
        load_weights(model, load_state_dict(path, "teacher.checkpoint"), f"teacher.checkpoint {path}", arch_name(spec))
        source = f"checkpoint {path}"
    else:
        cache = layout.teacher_cache(config.execution.results, cache_key(config, spec, tcfg))
        path = str(cache / "teacher.pt")
        if (cache / "teacher.pt").exists():
            load_weights(model, load_state_dict(path, "teacher cache"), "teacher cache", arch_name(spec))
            source = f"cache {path}"
        else:
            source = _train_teacher(config, tcfg, data, model, spec, cache, log)
    info = TeacherInfo(
        spec=spec,
        params=count_params(model),
        val_accuracy=evaluate(model, data, "val"),
        test_accuracy=evaluate(model, data, "test"),
        source=source,
        path=path,
    )
    return model.eval(), info


def _train_teacher(
    config: StudyConfig, teacher: TeacherConfig, data: Dataset, model: nn.Module, spec: dict[str, Any], cache: Path, log: Callable[[str], None]
) -> str:
    tcfg = teacher.train
    train_cfg = TrainConfig.model_validate(tcfg.model_dump(exclude={"seed"}))
    log(f"training teacher {arch_name(spec)} ({count_params(model):,} params) for {tcfg.epochs} epochs")
    started = time.perf_counter()

    def progress(stats) -> None:
        if stats.epoch == 1 or stats.epoch % 5 == 0 or stats.epoch == tcfg.epochs:
            log(f"  teacher epoch {stats.epoch}/{tcfg.epochs}: loss {stats.loss:.4f}, val accuracy {stats.accuracy:.4f}")

    train(model, data, train_cfg, seed=tcfg.seed, on_epoch=progress, device=compute_device(config))
    model.to("cpu", memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - started
    _io.torch_save(cache / "teacher.pt", model.state_dict())
    _io.write_json(cache / "teacher.json", {"spec": spec, "train": tcfg.model_dump(), "train_seconds": seconds})
    return f"trained in {seconds:.1f} s, cached at {cache}"


OUTPUTS_VERSION = 1  # bump when what the outputs cache holds changes
OUTPUT_BATCH = 1024  # the teacher's batch when it computes the outputs once per study


def _weights_digest(model: nn.Module):
    """A sha256 fed with the model's weights (names and bytes), to be fed more."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_buffer(tensor))
    return digest


def outputs_key(model: nn.Module, data: Dataset, config: StudyConfig) -> str:
    """Identifies the cached outputs: the teacher's weights, the training images and the
    augmented views (when the study uses cached views)."""

    digest = _weights_digest(model)
    digest.update(data.train_digest())
    aug = config.augment
    views = {"padding": aug.crop_padding, "flip": aug.flip, "views": aug.views} if aug.crops and aug.teacher == "views" else None
    digest.update(json.dumps({"version": OUTPUTS_VERSION, "mean": data.mean, "std": data.std, "views": views}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def teacher_costs(model: nn.Module, input_shape: tuple[int, ...], config: StudyConfig) -> dict[str, float]:
    """The teacher's params, MACs and size (:func:`autodistill.measure.static_costs`), kept
    under ``<execution.results>/.teachers/costs/`` by its weights and input shape: counting
    MACs the first time in a process takes seconds, and every study of a cached teacher
    would pay them before its first trial."""
    digest = _weights_digest(model)
    digest.update(json.dumps({"input": list(input_shape), "version": 1}).encode())
    path = layout.costs_cache(config.execution.results, digest.hexdigest()[:16])
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and {"params", "macs", "size_mb"} <= set(cached):
            return {k: cached[k] for k in ("params", "macs", "size_mb")}
    except (OSError, ValueError):
        pass  # not there yet, or unreadable: counted again
    costs = static_costs(model, input_shape)
    _io.write_json(path, costs)
    return costs


@torch.no_grad()
def _outputs(model: nn.Module, data: Dataset, x: torch.Tensor, params: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    for idx, xb, _ in batches(x, data.y_train, OUTPUT_BATCH):  # in order; a streamed split decodes in its workers
        xb = xb.to(device)
        if params is not None:
            xb = apply(xb, params[idx], padding)
        out.append(model(data.normalize(xb)).float().cpu())
    return torch.cat(out)


def _half(logits: torch.Tensor) -> torch.Tensor:
    half = logits.to(torch.float16)
    return half if torch.isfinite(half).all() else logits  # logits beyond float16's range stay float32


def teacher_outputs(models: nn.Module | list[nn.Module], data: Dataset, config: StudyConfig, log: Callable[[str], None] = print) -> TeacherTargets:
    """The teachers' outputs for the study's trials, from the cache under
    ``<execution.results>/.teachers/outputs/`` or computed once (in batches of
    :data:`OUTPUT_BATCH`) and stored there (``.npy``, float16), one entry per teacher.
    ``models``: the teacher, or the teachers of ``config.all_teachers`` in order."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    each = [_one_teacher_outputs(model, data, config) for model in models]
    aug = config.augment
    if len(each) == 1:
        targets = each[0]
    else:

        def stacked(name: str) -> torch.Tensor | None:
            tensors = [getattr(t, name) for t in each]
            if tensors[0] is None:
                return None
            if len({t.dtype for t in tensors}) > 1:  # one teacher's logits did not fit float16
                tensors = [t.float() for t in tensors]
            return torch.stack(tensors)

        targets = TeacherTargets(
            logits=stacked("logits"),
            views=stacked("views"),
            view_params=each[0].view_params,
            source="; ".join(f"teacher {i}: {t.source}" for i, t in enumerate(each)),
            weights=[t.weight for t in config.all_teachers],
        )
    if config.distill.needs_teacher_features:
        targets.features, targets.attentions, note = _stage_outputs(models[0], data, config)
        targets.source += f"; {note}"
    for model in models:
        model.cpu()  # trials move what they need to their own device
    if (aug.active and aug.teacher == "live") or config.distill.needs_teacher_features:
        targets.live = models[0].eval()
    if aug.active and aug.teacher == "live" and len(models) > 1:
        targets.live_extra = [m.eval() for m in models[1:]]
    return targets


def _one_teacher_outputs(model: nn.Module, data: Dataset, config: StudyConfig) -> TeacherTargets:
    model.eval().to(compute_device(config))
    aug = config.augment
    use_views = aug.crops and aug.teacher == "views"
    cache = layout.outputs_cache(config.execution.results, outputs_key(model, data, config))
    names = ["logits", "views", "view_params"] if use_views else ["logits"]
    started = time.perf_counter()
    problem = ""
    if all((cache / f"{n}.npy").exists() for n in names):
        try:
            arrays = {n: torch.from_numpy(np.load(cache / f"{n}.npy")) for n in names}
            return TeacherTargets(**arrays, source=f"cache {cache}")
        except (OSError, ValueError) as err:
            problem = f" (the cache was unreadable: {err})"
    arrays = {"logits": _half(_outputs(model, data, data.x_train))}
    if use_views:
        params = view_params(len(data.y_train), aug.views, aug.crop_padding, aug.flip)
        arrays["views"] = _half(torch.stack([_outputs(model, data, data.x_train, p, aug.crop_padding) for p in params]))
        arrays["view_params"] = params
    for name, tensor in arrays.items():
        _io.atomic_write(cache / f"{name}.npy", lambda fh, t=tensor: np.save(fh, t.numpy()))
    seconds = time.perf_counter() - started
    what = f"{len(data.y_train)} images" + (f", plain and {aug.views} augmented views" if use_views else "")
    return TeacherTargets(**arrays, source=f"computed for {what} in {seconds:.1f} s, cached at {cache}{problem}")


def _wants_matrices(config: StudyConfig) -> bool:
    return config.distill.needs_teacher_features and "matrix" in choices(config.distill.attention_type)


@torch.no_grad()
def _stage_outputs(model: nn.Module, data: Dataset, config: StudyConfig):
    """(features, attentions, what was done) of the primary teacher on the training set, for
    feature and attention losses: read from or written to the outputs cache, or (None, None,
    why) when they would exceed ``execution.teacher_cache_gb`` (the teacher then runs live).
    ``model`` is in eval mode on the study's device (:func:`_one_teacher_outputs` put it there)."""
    matrices = _wants_matrices(config)
    device = next(model.parameters()).device
    example = data.normalize(data.x_train[:1].to(device))
    _, feats, attns = teacher_forward(model, example, matrices)
    per_image = sum(t[0].numel() for t in [*feats, *attns]) * 2  # float16
    need = per_image * len(data.y_train)
    limit = config.execution.teacher_cache_gb * 2**30
    if need > limit:
        return (
            None,
            None,
            (
                f"its stage outputs would take {need / 2**30:.2f} GiB (execution.teacher_cache_gb: {config.execution.teacher_cache_gb:g}), "
                f"so it runs live on every batch for feature and attention losses"
            ),
        )
    cache = layout.outputs_cache(config.execution.results, outputs_key(model, data, config))
    names = [f"feature_{i}" for i in range(len(feats))] + [f"attention_{i}" for i in range(len(attns))]
    started = time.perf_counter()
    if all((cache / f"{n}.npy").exists() for n in names):
        try:
            arrays = [torch.from_numpy(np.load(cache / f"{n}.npy")) for n in names]
            return arrays[: len(feats)], arrays[len(feats) :], f"stage outputs ({need / 2**20:.1f} MB) from the cache"
        except (OSError, ValueError):
            pass  # recomputed below
    out: list[list[torch.Tensor]] = [[] for _ in names]
    for _, xb, _ in batches(data.x_train, data.y_train, OUTPUT_BATCH):
        _, feats, attns = teacher_forward(model, data.normalize(xb.to(device)), matrices)
        for chunks, tensor in zip(out, [*feats, *attns]):
            chunks.append(_half(tensor.float().cpu()))  # float16 as it comes: no float32 copy of the whole set
    arrays = [torch.cat(chunks) for chunks in out]
    for name, tensor in zip(names, arrays):
        _io.atomic_write(cache / f"{name}.npy", lambda fh, t=tensor: np.save(fh, t.numpy()))
    seconds = time.perf_counter() - started
    return arrays[: len(feats)], arrays[len(feats) :], f"stage outputs ({need / 2**20:.1f} MB) computed in {seconds:.1f} s"
