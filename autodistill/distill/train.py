"""One training run: the loop shared by a trial's student and a trained-from-scratch teacher.

:func:`train` reads top to bottom: where the teacher's outputs come from is decided once
(:class:`TeacherSource`), the loss and optimizer are built, a checkpoint is restored
(:class:`TrainState`), and then each epoch is one call of :meth:`_Loop.epoch`, each step one
call of :meth:`_Loop.step`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn

from .. import augment as _augment
from .._errors import TrialDiverged
from ..compress import Compression, observers_frozen
from ..config import AugmentConfig, DistillConfig, TrainConfig
from ..data import Dataset, batches
from ..targets import TeacherTargets
from .recipe import TERMS, DistillLoss, student_forward, teacher_forward, wants_teacher
from .schedules import lr_factor


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


@dataclass
class TrainState:
    """Everything needed to continue a run after an epoch: what ``on_checkpoint`` receives
    (as :meth:`as_dict`, plain values and tensors that ``torch.load(weights_only=True)`` reads
    back) and what ``resume`` takes."""

    epoch: int  # the last epoch done (1-based)
    step: int  # optimisation steps done
    model: dict
    optimizer: dict
    recipe: dict | None  # the loss's projectors (feature distillation)
    compress: dict | None  # what pruning did so far (Compression.state)
    generator: torch.Tensor  # shuffling and augmentation RNG
    torch_rng: torch.Tensor  # dropout RNG
    history: list[dict]  # EpochStats of the epochs done, as dicts

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copy: the caller saves it before the next step

    @classmethod
    def from_dict(cls, state: dict) -> TrainState:
        return cls(**{f.name: state.get(f.name) for f in fields(cls)})


@dataclass
class TeacherSource:
    """Where a step's teacher outputs come from, chosen once per run (:meth:`choose`):

    - ``soft``: the cached logits of the un-augmented training set, (M, N, K) for M teachers;
    - ``views`` (M, V, N, K) with ``view_params`` (V, N, 3): cached logits of V augmented
      copies, for crops and flips (each sample of a batch is one of its views);
    - ``live``: the teachers themselves, run on every (augmented or mixed) batch;
    - ``primary`` with ``feats`` / ``attns``: the first teacher for feature and attention
      losses, and its stage outputs cached for the un-augmented images (else it runs live).
    """

    soft: torch.Tensor | None = None
    views: torch.Tensor | None = None
    view_params: torch.Tensor | None = None
    live: list[nn.Module] = field(default_factory=list)
    primary: nn.Module | None = None
    feats: list[torch.Tensor] | None = None
    attns: list[torch.Tensor] | None = None

    @classmethod
    def choose(cls, targets: TeacherTargets | None, aug: AugmentConfig | None, device: torch.device) -> TeacherSource:
        """The source for ``targets`` (None: no teacher) given the run's augmentation."""
        if targets is None:
            return cls()
        multi = targets.count > 1
        mixes = aug is not None and aug.mixes
        source = cls(primary=targets.live.to(device).eval() if targets.live is not None else None)
        if aug is not None and targets.views is not None and not mixes:
            source.views, source.view_params = targets.views.to(device), targets.view_params
            source.views = source.views if multi else source.views[None]  # (M, V, N, K)
        elif targets.live is not None and (aug is not None or targets.logits is None):  # the teachers run on every batch
            source.live = [m.to(device).eval() for m in [targets.live, *(targets.live_extra or [])]]
            if len(source.live) != targets.count:
                raise ValueError("augmentation with several teachers needs all of them live (augment.teacher: live)")
        elif aug is None and targets.logits is not None:
            source.soft = targets.logits.to(device)
            source.soft = source.soft if multi else source.soft[None]  # (M, N, K)
        else:
            raise ValueError("augmentation with a teacher needs its cached views or the live teacher")
        return source

    def use_cached_stage_outputs(self, targets: TeacherTargets, matrices: bool, device: torch.device) -> None:
        """Take the teacher's stage outputs from the study's cache: only for the un-augmented
        images (with crops or mixing the teacher must see the batch itself)."""
        if self.soft is not None and targets.features is not None and (not matrices or targets.attentions):
            self.feats = [f.to(device) for f in targets.features]
            self.attns = [a.to(device) for a in targets.attentions] if matrices else None

    def per_batch(self, features: bool) -> list[nn.Module]:
        """The teachers that run on every batch (:meth:`outputs`)."""
        return [*self.live, self.primary] if features and self.feats is None else list(self.live)

    def cached(self, idx_d: torch.Tensor) -> torch.Tensor | None:
        """The cached soft targets of the batch's rows (M, B, K), if any."""
        return self.soft[:, idx_d] if self.soft is not None else None

    def pick_views(self, idx: torch.Tensor, idx_d: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmentation params (B, 3), soft targets (M, B, K)) of one cached view per sample:
        the teacher saw exactly the image the student will."""
        v = torch.randint(len(self.view_params), (len(idx),), generator=generator)
        return self.view_params[v, idx], self.views[:, v.to(idx_d.device), idx_d]

    def outputs(self, inputs: torch.Tensor, idx_d: torch.Tensor, stack: torch.Tensor | None, features: bool, matrices: bool):
        """(soft targets (M, B, K) or None, stage maps, attention matrices) for the batch:
        cached where the cache holds them, else from the teachers run on ``inputs``."""
        if self.feats is not None:
            return stack, [f[idx_d] for f in self.feats], [a[idx_d] for a in self.attns] if self.attns is not None else None
        if not (self.live or features):
            return stack, None, None
        t_feats = t_attns = None
        with torch.no_grad():
            if features:
                t_logits, t_feats, t_attns = teacher_forward(self.primary, inputs, matrices)
            else:
                t_logits = self.live[0](inputs)
            if self.live:
                stack = torch.stack([t_logits, *(m(inputs) for m in self.live[1:])])
            elif stack is not None:
                stack = torch.cat([t_logits[None].to(stack.dtype), stack[1:]])
        return stack, t_feats, t_attns


def train(
    model: nn.Module,
    data: Dataset,
    train_cfg: TrainConfig,
    distill_cfg: DistillConfig | None = None,
    teacher: TeacherTargets | torch.Tensor | None = None,
    *,
    seed: int = 0,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    compression: Compression | None = None,
    augment: AugmentConfig | None = None,
    device: str | torch.device = "cpu",
) -> list[EpochStats]:
    """Train ``model`` on ``data.x_train``; with ``teacher`` (:class:`TeacherTargets`, or the
    teacher's logits (N_train, K)) and a distill config, by the fused KD loss, else by
    cross-entropy alone. Raises :class:`TrialDiverged` when the loss stops being finite.

    ``augment`` (fixed values) crops and flips each batch on the tensor; the teacher's outputs
    for the augmented batch are its cached view outputs or, with a live teacher, computed on
    the batch. An uncompressed model runs in channels_last, and on the CPU the live teachers as
    well (there for the run only: :data:`CPU_CHANNELS_LAST`). On a CUDA ``device`` the data
    and the teacher's outputs move to the GPU once and the forward pass runs in bf16 autocast.

    ``on_checkpoint`` receives, after each epoch but the last, :meth:`TrainState.as_dict`
    (model, optimizer, LR schedule, shuffling and dropout RNG states, history), holding live
    tensors: save or copy it before returning. Passing that dict back as ``resume`` continues
    with the next epoch exactly where the run left off.

    With ``compression`` (:class:`autodistill.compress.Compression`), ``compression.model`` is
    trained instead of ``model``: it may be pruned before an epoch or become a QAT network,
    and the optimizer is then rebuilt for its new parameters (the LR schedule goes on)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    targets = TeacherTargets(logits=teacher) if isinstance(teacher, torch.Tensor) else teacher
    aug = augment if augment is not None and augment.active else None
    use_teacher = targets is not None and wants_teacher(distill_cfg)
    source = TeacherSource.choose(targets if use_teacher else None, aug, device)
    resumed = TrainState.from_dict(resume) if resume is not None else None
    if compression is not None:
        model = compression.restore(resumed.compress if resumed else None)
    if device.type == "cuda" and compression is not None:
        raise ValueError("compressed students train on the CPU (pruning and int8 run there)")
    layout = _ChannelsLast(device)
    layout.add(model if compression is None else None)  # pruning and int8 keep NCHW
    try:
        x = data.x_train.to(device)
        example = to_device(data.normalize(x[:1]), device)
        multi = use_teacher and targets.count > 1
        weights = targets.weights if multi else None
        criterion = DistillLoss(distill_cfg, model, source.primary, example, train_cfg.epochs, kd=use_teacher, teacher_weights=weights)
        if criterion.needs_teacher_features:
            if source.primary is None:
                raise ValueError("feature and attention losses need the live teacher (TeacherTargets.live)")
            if compression is not None:
                raise ValueError("feature and attention losses cannot be combined with compression")
            source.use_cached_stage_outputs(targets, criterion.needs_attention_matrices, device)
        layout.add_teachers(source.per_batch(criterion.needs_teacher_features))
        loop = _Loop(model, data, train_cfg, criterion, source, compression, aug, generator, device, x, data.y_train.to(device))
        history: list[EpochStats] = []
        if resumed is not None:
            history = loop.restore(resumed)
        for epoch in range(loop.next_epoch, train_cfg.epochs + 1):
            stats = loop.epoch(epoch)
            history.append(stats)
            if on_checkpoint is not None and epoch < train_cfg.epochs:
                on_checkpoint(loop.state(epoch, history).as_dict())
            if on_epoch is not None:
                on_epoch(stats)
    finally:
        layout.restore()
    return history


CPU_CHANNELS_LAST = True
"""Train on the CPU in channels_last: the student (unless compressed: pruning and int8 keep
NCHW) and the teachers that run on every batch, put back in NCHW when training ends (the
layout a student ships and is timed in; a teacher is shared with the caller). oneDNN's
convolutions run a training step 1.05-1.7x faster in it at 8x8 and at 32x32, and an epoch
with a live teacher 1.2x (``scripts/bench_layout.py``, which sets this to False for its
NCHW baseline); the numbers differ from NCHW's by rounding only."""


class _ChannelsLast:
    """The modules a run put in channels_last: on CUDA the student, for good; on the CPU
    (:data:`CPU_CHANNELS_LAST`) the student and the teachers run on every batch, until
    :meth:`restore`. On the CPU a convolution that oneDNN cannot train in channels_last
    (:func:`_unsafe_in_channels_last`) stays NCHW and is handed its input in NCHW."""

    def __init__(self, device: torch.device):
        self.device, self.modules, self.hooks = device, [], []
        self.active = device.type == "cuda" or CPU_CHANNELS_LAST

    def add(self, module: nn.Module | None) -> None:
        if self.active and module is not None and all(module is not m for m in self.modules):
            module.to(self.device, memory_format=torch.channels_last)
            self.modules.append(module)
            for conv in module.modules() if self.device.type == "cpu" else []:
                if _unsafe_in_channels_last(conv):
                    conv.to(memory_format=torch.contiguous_format)
                    self.hooks.append(conv.register_forward_pre_hook(_nchw_input))

    def add_teachers(self, teachers: list[nn.Module]) -> None:
        for teacher in teachers if self.device.type == "cpu" else []:
            self.add(teacher)

    def restore(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for module in self.modules if self.device.type == "cpu" else []:
            module.to(memory_format=torch.contiguous_format)


def _unsafe_in_channels_last(module: nn.Module) -> bool:
    """A strided 1x1 convolution with fewer than 16 input channels per group. oneDNN's 1x1
    backward-weights kernels (the AVX2 one below 8 channels, the AVX-512 one below 16) write
    past their workspace for a channels_last input (oneDNN issue 6035, still in PyTorch
    2.14): a crash ("double free or corruption") with one thread, a hang or wrong gradients
    with two. ResNet shortcuts of a narrow stage are such convolutions; NCHW takes another
    kernel, which is right."""
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1) and module.in_channels // module.groups < 16


def _nchw_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


class _Loop:
    """The state of one run between steps: the model (a compressed one may be replaced), its
    optimizer, the step count and the RNG, and what each step reads."""

    def __init__(self, model, data, cfg, criterion, source, compression, aug, generator, device, x, y):
        self.model, self.data, self.cfg, self.criterion, self.source = model, data, cfg, criterion, source
        self.compression, self.aug, self.generator, self.device, self.x, self.y = compression, aug, generator, device, x, y
        self.crops = aug is not None and aug.crops
        self.mixes = aug is not None and aug.mixes
        self.features, self.matrices = criterion.needs_teacher_features, criterion.needs_attention_matrices
        steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
        self.total_steps = steps_per_epoch * cfg.epochs
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        self.step_count = 0
        self.next_epoch = 1
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        self.optimizer = make_optimizer(self.model, self.cfg, self.criterion)
        self.student_params = [p for p in self.model.parameters() if p.requires_grad]

    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.cfg.lr * lr_factor(self.step_count, self.total_steps, self.warmup_steps)

    def restore(self, state: TrainState) -> list[EpochStats]:
        """Continue from ``state``: weights, loss projectors, optimizer, RNG; its history."""
        self.model.load_state_dict(state.model)
        if state.recipe:
            self.criterion.load_state_dict(state.recipe)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        self.step_count, self.next_epoch = state.step, state.epoch + 1
        return [EpochStats(**h) for h in state.history]

    def state(self, epoch: int, history: list[EpochStats]) -> TrainState:
        return TrainState(
            epoch=epoch,
            step=self.step_count,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            recipe=self.criterion.state_dict(),
            compress=self.compression.state() if self.compression is not None else None,
            generator=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            history=[asdict(h) for h in history],
        )

    def epoch(self, epoch: int) -> EpochStats:
        """Train one epoch (pruning first when the schedule says so), then evaluate."""
        if self.compression is not None and self.compression.before_epoch(epoch):
            self.model = self.compression.model
            self._new_optimizer()
        self.model.train()
        self.criterion.train()
        started = time.perf_counter()
        sums = {key: torch.zeros((), device=self.device) for key in ("loss", *TERMS)}  # summed on the device: no sync per step
        scale_sums: dict[str, float] = {}
        temperature = weights = None
        for idx, xb, yb in batches(self.x, self.y, self.cfg.batch_size, shuffle=True, generator=self.generator):
            loss, terms, scales, temperature, weights = self.step(idx, xb, yb, epoch)
            n = len(yb)
            sums["loss"] += loss.detach() * n
            for key, value in terms.items():
                sums[key] += value.detach() * n
            for key, value in scales.items():
                scale_sums[key] = scale_sums.get(key, 0.0) + value * n
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        steps_s = time.perf_counter() - started
        with observers_frozen(self.model) if self.compression is not None and self.compression.qat else nullcontext():
            accuracy = evaluate(self.model, self.data, "val")
        return self._stats(epoch, accuracy, {k: v.item() for k, v in sums.items()}, scale_sums, temperature, weights, started, steps_s)

    def step(self, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, epoch: int):
        """One optimisation step on a batch: (loss, its unweighted terms, balance scales,
        temperature, term weights)."""
        criterion, source, aug, device, generator = self.criterion, self.source, self.aug, self.device, self.generator
        xb = xb.to(device)  # a streamed batch is decoded on the CPU; resident data is there already
        progress = self.step_count / max(self.total_steps - 1, 1)
        weights = criterion.weights(progress, epoch)
        idx_d = idx.to(device)  # the batch's rows of the teacher's cached outputs
        stack = source.cached(idx_d)  # (M, B, K)
        if self.crops:
            if source.views is not None:
                params, stack = source.pick_views(idx, idx_d, generator)
            else:
                params = _augment.random_params(len(idx), aug.crop_padding, aug.flip, generator)
            xb = _augment.apply(xb, params, aug.crop_padding)
        inputs = to_device(self.data.normalize(xb), device)
        yb_b, lam = None, 1.0
        if self.mixes:
            inputs, perm, lam = _augment.mix(inputs, aug.mixup, aug.cutmix, generator)
            yb_b = yb[perm.to(device)]
        with autocast(device):
            stack, t_feats, t_attns = source.outputs(inputs, idx_d, stack, self.features, self.matrices)
            logits, s_feats, s_attns = student_forward(self.model, inputs, self.features, self.matrices)
            temperature = criterion.temperature(progress, stack) if stack is not None and weights["kd"] > 0 else None
            terms = criterion.components(
                weights,
                logits,
                yb,
                labels_b=yb_b,
                lam=lam,
                teacher_stack=stack,
                temperature=temperature or 1.0,
                student_feats=s_feats,
                student_attns=s_attns,
                teacher_feats=t_feats,
                teacher_attns=t_attns,
                student=self.model,
                teacher=source.primary,
            )
            loss, scales = criterion.combine(terms, weights, self.student_params)
        if not torch.isfinite(loss):
            raise TrialDiverged(f"loss became {loss.item()} at epoch {epoch}, step {self.step_count}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        self.optimizer.step()
        self.step_count += 1
        return loss, terms, scales, temperature, weights

    def _stats(self, epoch, accuracy, sums, scale_sums, temperature, weights, started, steps_s) -> EpochStats:
        n, criterion = len(self.y), self.criterion
        extra: dict = {}
        if criterion.feat_on:
            extra["loss_feat"] = sums["feat"] / n
        if criterion.att_on:
            extra["loss_att"] = sums["att"] / n
        if criterion.uses_teacher:  # the weights of the epoch's last step
            extra.update({f"w_{k}": float(v) for k, v in weights.items()})
            extra["stage"] = criterion.stage(epoch)
        extra.update({f"balance_{k}": v / n for k, v in scale_sums.items()})
        return EpochStats(
            epoch=epoch,
            accuracy=accuracy,
            loss=sums["loss"] / n,
            loss_ce=sums["ce"] / n,
            loss_kd=sums["kd"] / n if criterion.kd else None,
            temperature=float(temperature) if temperature is not None else None,
            lr=self.lr(),  # the next step's
            epoch_s=time.perf_counter() - started,
            steps_s=steps_s,
            extra=extra,
        )
