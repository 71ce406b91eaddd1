"""One training run: the loop shared by a trial's student and a trained-from-scratch teacher."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn

from .. import augment as _augment
from .._errors import TrialDiverged
from ..compress import observers_frozen
from ..config import AugmentConfig, DistillConfig, TrainConfig
from ..data import Dataset, batches
from .recipe import TERMS, DistillLoss, student_forward, teacher_forward
from .schedules import lr_factor

if TYPE_CHECKING:
    from ..compress import Compression
    from ..teacher import TeacherTargets


@dataclass
class EpochStats:
    epoch: int  # 1-based
    accuracy: float  # validation
    loss: float  # training, mean over the epoch
    loss_ce: float
    loss_kd: float | None
    temperature: float | None
    lr: float
    epoch_s: float
    steps_s: float = 0.0  # inside the training steps (batch, augmentation, teacher, forward, backward, update), not evaluation
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        return out


def make_optimizer(model: nn.Module, cfg: TrainConfig, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's parameters and ``extra``'s (the loss's projectors). No
    weight decay on biases and norm parameters (the usual practice)."""
    params = [*model.parameters(), *(extra.parameters() if extra is not None else [])]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def device_of(model: nn.Module) -> torch.device:
    """Where a model's weights are (a quantized model, with no parameters, is on the CPU)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def autocast(device: torch.device):
    """bf16 autocast on CUDA (Ampere and later run it at full speed, no loss scaling); none on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Onto ``device``; a CUDA image batch in channels_last (the layout cuDNN's convolutions prefer)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.ndim == 4 else x


@torch.no_grad()
def predict_logits(model: nn.Module, data: Dataset, split: str, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    device = device_of(model)
    x, y = data.split(split)
    with autocast(device):
        out = [model(to_device(data.normalize(xb.to(device)), device)).float().cpu() for _, xb, _ in batches(x, y, batch_size)]
    return torch.cat(out)  # (N, K)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "val", batch_size: int = 512) -> float:
    """Top-1 accuracy on a split, in [0, 1]."""
    logits = predict_logits(model, data, split, batch_size)
    return (logits.argmax(dim=1) == data.split(split)[1]).float().mean().item()


def train(
    model: nn.Module,
    data: Dataset,
    train_cfg: TrainConfig,
    distill_cfg: DistillConfig | None = None,
    teacher: "TeacherTargets | torch.Tensor | None" = None,
    *,
    seed: int = 0,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    compression: "Compression | None" = None,
    augment: AugmentConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[EpochStats]:
    """Train ``model`` on ``data.x_train``; with ``teacher`` (:class:`TeacherTargets`, or the
    teacher's logits (N_train, K)) and a distill config, by the fused KD loss, else by
    cross-entropy alone. Raises :class:`TrialDiverged` when the loss stops being finite.

    ``augment`` (fixed values) crops and flips each batch on the tensor; the teacher's outputs
    for the augmented batch are its cached view outputs or, with a live teacher, computed on
    the batch. On a CUDA ``device`` the data and the teacher's outputs move to the GPU once,
    the model runs in channels_last and the forward pass in bf16 autocast.

    ``on_checkpoint`` receives, after each epoch, everything needed to continue (model,
    optimizer, LR schedule, shuffling and dropout RNG states, history), holding live tensors:
    save or copy it before returning. Passing that dict back as ``resume`` continues with the
    next epoch exactly where the run left off.

    With ``compression`` (:class:`autodistill.compress.Compression`), ``compression.model`` is
    trained instead of ``model``: it may be pruned before an epoch or become a QAT network,
    and the optimizer is then rebuilt for its new parameters (the LR schedule goes on)."""
    from ..teacher import TeacherTargets

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    targets = TeacherTargets(logits=teacher) if isinstance(teacher, torch.Tensor) else teacher
    aug = augment if augment is not None and augment.active else None
    crops = aug is not None and (aug.crop_padding > 0 or aug.flip)
    mixes = aug is not None and (aug.mixup > 0 or aug.cutmix > 0)
    steps_per_epoch = math.ceil(len(y) / train_cfg.batch_size)
    total_steps = steps_per_epoch * train_cfg.epochs
    warmup_steps = round(train_cfg.warmup_epochs * steps_per_epoch)
    dcfg = distill_cfg
    use_teacher = targets is not None and dcfg is not None and (
        dcfg.alpha > 0 or (dcfg.alpha_end or 0) > 0 or dcfg.feature_weight > 0 or dcfg.attention_weight > 0
    )
    multi = use_teacher and targets.count > 1
    views = soft = None
    live_all: list[nn.Module] = []
    if use_teacher:
        if aug is not None and targets.views is not None and not mixes:
            views, view_params = targets.views.to(device), targets.view_params
            views = views if multi else views[None]  # (M, V, N, K)
        elif targets.live is not None and (aug is not None or targets.logits is None):  # the teachers run on every batch
            live_all = [m.to(device).eval() for m in [targets.live, *(targets.live_extra or [])]]
            if len(live_all) != targets.count:
                raise ValueError("augmentation with several teachers needs all of them live (augment.teacher: live)")
        elif aug is None and targets.logits is not None:
            soft = targets.logits.to(device)
            soft = soft if multi else soft[None]  # (M, N, K)
        else:
            raise ValueError("augmentation with a teacher needs its cached views or the live teacher")
    history: list[EpochStats] = []
    step = 0
    first_epoch = 1
    if compression is not None:
        model = compression.restore(resume.get("compress") if resume else None)
    if device.type == "cuda":
        if compression is not None:
            raise ValueError("compressed students train on the CPU (pruning and int8 run there)")
        model.to(device, memory_format=torch.channels_last)
    primary = None
    if use_teacher and targets.live is not None:
        primary = targets.live.to(device).eval()
    example = to_device(data.normalize(x[:1]), device)
    criterion = DistillLoss(dcfg, model, primary, example, train_cfg.epochs, kd=use_teacher, teacher_weights=targets.weights if multi else None)
    features, matrices = criterion.needs_student_features, criterion.needs_attention_matrices
    if features and primary is None:
        raise ValueError("feature and attention losses need the live teacher (TeacherTargets.live)")
    # The teacher's stage outputs from the study's cache: only for the un-augmented images
    # (with crops or mixing the teacher must see the batch itself).
    cached_feats = cached_attns = None
    if features and soft is not None and targets.features is not None and (not matrices or targets.attentions):
        cached_feats = [f.to(device) for f in targets.features]
        cached_attns = [a.to(device) for a in targets.attentions] if matrices else None
    if features and compression is not None:
        raise ValueError("feature and attention losses cannot be combined with compression")
    optimizer = make_optimizer(model, train_cfg, criterion)
    if resume is not None:
        model.load_state_dict(resume["model"])
        if resume.get("recipe"):
            criterion.load_state_dict(resume["recipe"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        history = [EpochStats(**h) for h in resume["history"]]
        step, first_epoch = resume["step"], resume["epoch"] + 1
    student_params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(first_epoch, train_cfg.epochs + 1):
        if compression is not None and compression.before_epoch(epoch):
            model = compression.model
            optimizer = make_optimizer(model, train_cfg, criterion)
            student_params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        criterion.train()
        started = time.perf_counter()
        sums = {key: torch.zeros((), device=device) for key in ("loss", *TERMS)}  # summed on the device: no sync per step
        scale_sums: dict[str, float] = {}
        temperature = weights = None
        for idx, xb, yb in batches(x, y, train_cfg.batch_size, shuffle=True, generator=generator):
            xb = xb.to(device)  # a streamed batch is decoded on the CPU; resident data is there already
            progress = step / max(total_steps - 1, 1)
            weights = criterion.weights(progress, epoch)
            idx_d = idx.to(device)  # the batch's rows of the teacher's cached outputs
            stack = soft[:, idx_d] if soft is not None else None  # (M, B, K)
            if crops:
                if views is not None:  # each sample is one of its cached views: the teacher saw exactly this image
                    v = torch.randint(len(view_params), (len(idx),), generator=generator)
                    params, stack = view_params[v, idx], views[:, v.to(device), idx_d]
                else:
                    params = _augment.random_params(len(idx), aug.crop_padding, aug.flip, generator)
                xb = _augment.apply(xb, params, aug.crop_padding)
            inputs = to_device(data.normalize(xb), device)
            yb_b, lam = None, 1.0
            if mixes:
                inputs, perm, lam = _augment.mix(inputs, aug.mixup, aug.cutmix, generator)
                yb_b = yb[perm.to(device)]
            with autocast(device):
                t_feats = t_attns = None
                if cached_feats is not None:
                    t_feats = [f[idx_d] for f in cached_feats]
                    t_attns = [a[idx_d] for a in cached_attns] if cached_attns is not None else None
                elif live_all or features:
                    with torch.no_grad():
                        if features:
                            t_logits, t_feats, t_attns = teacher_forward(primary, inputs, matrices)
                        else:
                            t_logits = live_all[0](inputs)
                        if live_all:
                            stack = torch.stack([t_logits, *(m(inputs) for m in live_all[1:])])
                        elif stack is not None:
                            stack = torch.cat([t_logits[None].to(stack.dtype), stack[1:]])
                logits, s_feats, s_attns = student_forward(model, inputs, features, matrices)
                temperature = criterion.temperature(progress, stack) if stack is not None and weights["kd"] > 0 else None
                terms = criterion.components(
                    weights, logits, yb, labels_b=yb_b, lam=lam, teacher_stack=stack, temperature=temperature or 1.0,
                    student_feats=s_feats, student_attns=s_attns, teacher_feats=t_feats, teacher_attns=t_attns,
                    student=model, teacher=primary,
                )
                loss, scales = criterion.combine(terms, weights, student_params)
            if not torch.isfinite(loss):
                raise TrialDiverged(f"loss became {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = train_cfg.lr * lr_factor(step, total_steps, warmup_steps)
            optimizer.step()
            step += 1
            n = len(yb)
            sums["loss"] += loss.detach() * n
            for key, value in terms.items():
                sums[key] += value.detach() * n
            for key, value in scales.items():
                scale_sums[key] = scale_sums.get(key, 0.0) + value * n
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps_s = time.perf_counter() - started
        sums = {key: value.item() for key, value in sums.items()}
        with observers_frozen(model) if compression is not None and compression.qat else nullcontext():
            accuracy = evaluate(model, data, "val")
        extra: dict = {}
        if criterion.feat_on:
            extra["loss_feat"] = sums["feat"] / len(y)
        if criterion.att_on:
            extra["loss_att"] = sums["att"] / len(y)
        if use_teacher:  # the weights of the epoch's last step
            extra.update({f"w_{k}": float(v) for k, v in weights.items()})
            extra["stage"] = criterion.stage(epoch)
        extra.update({f"balance_{k}": v / len(y) for k, v in scale_sums.items()})
        stats = EpochStats(
            epoch=epoch,
            accuracy=accuracy,
            loss=sums["loss"] / len(y),
            loss_ce=sums["ce"] / len(y),
            loss_kd=sums["kd"] / len(y) if criterion.kd else None,
            temperature=float(temperature) if temperature is not None else None,
            lr=train_cfg.lr * lr_factor(step, total_steps, warmup_steps),  # the next step's
            epoch_s=time.perf_counter() - started,
            steps_s=steps_s,
            extra=extra,
        )
        history.append(stats)
        if on_checkpoint is not None and epoch < train_cfg.epochs:
            on_checkpoint(
                {
                    "epoch": epoch,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "recipe": criterion.state_dict(),
                    "compress": compression.state() if compression is not None else None,
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(h) for h in history],
                }
            )
        if on_epoch is not None:
            on_epoch(stats)
    return history
