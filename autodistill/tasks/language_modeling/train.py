"""Training and evaluation of a causal language model, with or without its teacher.

One step: a batch of training sequences (a share of them the teacher's synthetic
continuations when ``distill.synthetic_ratio`` > 0), the student's logits at every position,
and the fused loss::

    total = w_ce * CE + w_kd * KD + hidden_weight * hidden + attention_weight * attention

KD reads the teacher's top-k cache of those sequences (:mod:`.losses`); the hidden-state and
attention terms need the teacher's internals, so the teacher then runs on the batch (no
gradient). In the first ``stage1_fraction`` of the steps only the hidden-state term trains.
AdamW with linear warm-up and cosine decay, gradient clipping; on a GPU bf16 autocast and,
when asked, gradient checkpointing. After every epoch: validation perplexity and next-token
accuracy, and a checkpoint to continue from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import TextDistillConfig, TextTrainConfig
from ...distill import EpochStats
from ...distill.schedules import kd_weight_at, lr_factor, temperature_at
from .losses import (
    attention_loss,
    entropy_weights,
    hidden_loss,
    kd_full_per_token,
    kd_per_token,
    layer_map,
    normalised_entropy,
    normalised_entropy_full,
)
from .models import config_class


@dataclass
class TextTargets:
    """What trials need of the teacher, computed once per study: its top-k cache of every
    training sequence (and of its synthetic continuations), and the teacher itself for the
    hidden-state and attention losses."""

    values: torch.Tensor | None  # (N, T, k) float16; None: no cache (distill.top_k: 0), the teacher runs on every batch
    indices: torch.Tensor | None  # (N, T, k) int32
    tail: torch.Tensor | None  # (N, T) float32
    synthetic: torch.Tensor | None = None  # (M, T) int64: the teacher's continuations
    synthetic_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    teacher: nn.Module | None = None  # run live for the hidden-state and attention losses, or a start of the student
    hidden: list[torch.Tensor] | None = None  # cached hidden states, float16 (N + M, T, H) per layer 0..L (embeddings first); rows: training, then synthetic
    attentions: list[torch.Tensor] | None = None  # cached attention matrices, float16 (N + M, heads, T, T) per layer
    teacher_config: dict = field(default_factory=dict)  # the teacher's transformers config (students are built from it)
    source: str = ""

    @property
    def nbytes(self) -> int:
        parts = [self.values, self.indices, self.tail, *(self.synthetic_cache or ()), *(self.hidden or ()), *(self.attentions or ())]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    @property
    def cached_internals(self) -> set[str]:
        """Which of the teacher's internals the cache holds (``hidden``, ``attentions``)."""
        return {name for name in ("hidden", "attentions") if getattr(self, name) is not None}

    def config(self):
        """The teacher's transformers config (None without one)."""
        if self.teacher is not None:
            return self.teacher.config
        if not self.teacher_config:
            return None
        return config_class(self.teacher_config["model_type"]).from_dict(self.teacher_config)


@dataclass
class LMEpoch(EpochStats):
    """An epoch of a language model: ``accuracy`` is the next-token accuracy; perplexity in extra."""

    extra: dict = field(default_factory=dict)


@torch.no_grad()
def evaluate(model: nn.Module, seqs: torch.Tensor, batch_size: int = 32) -> dict[str, float]:
    """Perplexity (exp of the mean next-token NLL) and next-token accuracy over ``seqs`` (N, T)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, correct, count = 0.0, 0, 0
    for start in range(0, len(seqs), batch_size):
        ids = seqs[start : start + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        labels = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += labels.numel()
    model.train(was)
    mean = nll / max(count, 1)
    return {"perplexity": math.exp(min(mean, 50.0)), "token_accuracy": correct / max(count, 1), "nll": mean}


class TextLoss(nn.Module):
    """The fused loss of a resolved recipe; holds the hidden-state projections (trained with
    the student, never exported)."""

    def __init__(
        self,
        cfg: TextDistillConfig | None,
        student: nn.Module,
        teacher_config,
        total_steps: int,
        has_targets: bool,
        live: bool = False,
        cached: frozenset = frozenset(),
    ):
        super().__init__()
        self.cached = cached  # the teacher internals read from the study's cache rather than a teacher forward
        self.cfg = cfg or TextDistillConfig(alpha=0.0)
        cfg = self.cfg
        self.kd_on = has_targets and (cfg.alpha > 0 or (cfg.alpha_end or 0) > 0)
        self.live_kd = self.kd_on and live  # no cache: KD reads the teacher's full logits, computed on the batch
        self.hidden_on = has_targets and cfg.hidden_weight > 0
        self.att_on = has_targets and cfg.attention_weight > 0
        self.total_steps = total_steps
        self.stage1_steps = min(round(cfg.stage1_fraction * total_steps), total_steps - 1) if self.hidden_on else 0
        s_cfg = student.config
        self.map = layer_map(s_cfg.num_hidden_layers, teacher_config.num_hidden_layers) if teacher_config is not None else []
        self.proj = nn.ModuleList()
        if self.hidden_on and s_cfg.hidden_size != teacher_config.hidden_size:
            self.proj = nn.ModuleList(nn.Linear(s_cfg.hidden_size, teacher_config.hidden_size, bias=False) for _ in self.map)

    @property
    def needs_teacher(self) -> bool:
        """Whether the teacher must run on each batch: KD without a cache, or internals the cache lacks."""
        return self.live_kd or (self.hidden_on and "hidden" not in self.cached) or (self.att_on and "attentions" not in self.cached)

    def weights(self, step: int) -> tuple[float, float, float, float]:
        """(w_ce, w_kd, w_hidden, w_att) at ``step``."""
        cfg = self.cfg
        if step < self.stage1_steps:
            return 0.0, 0.0, cfg.hidden_weight, 0.0
        p = step / max(self.total_steps - 1, 1)
        w_kd = kd_weight_at(cfg, p) if self.kd_on else 0.0
        w_ce = cfg.ce_weight if cfg.ce_weight is not None else 1.0 - w_kd
        return w_ce, w_kd, cfg.hidden_weight if self.hidden_on else 0.0, cfg.attention_weight if self.att_on else 0.0

    def _kd(self, progress: float, logits: torch.Tensor, cache, teacher_out):
        """(mean KD term over the tokens, the temperature) from the top-k ``cache`` of the
        batch or, without one, the teacher's full logits in ``teacher_out``."""
        cfg = self.cfg
        if cache is not None:
            values, indices, tail = (c[:, :-1] for c in cache)
            entropy = lambda: normalised_entropy(values, tail, logits.shape[-1])
            per_token = lambda t: kd_per_token(cfg.kd_loss, logits, values, indices, tail, t)
        else:
            t_logits = teacher_out.logits[:, :-1].float()
            entropy = lambda: normalised_entropy_full(t_logits)
            per_token = lambda t: kd_full_per_token(cfg.kd_loss, logits, t_logits, t)
        h = entropy() if cfg.temperature.schedule == "adaptive" or cfg.token_weighting == "entropy" else None
        temperature = temperature_at(cfg.temperature, progress, h if cfg.temperature.schedule == "adaptive" else None)
        kd = per_token(temperature)
        if cfg.token_weighting == "entropy":
            kd = kd * entropy_weights(h)
        return kd.mean(), temperature

    def forward(self, step: int, ids: torch.Tensor, out, cache, teacher_out) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        w_ce, w_kd, w_hid, w_att = self.weights(step)
        logits = out.logits[:, :-1].float()
        labels = ids[:, 1:]
        parts: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        temperature = None
        if w_ce > 0 or not (w_kd or w_hid or w_att):
            parts["ce"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
            total = total + w_ce * parts["ce"]
        if w_kd > 0:
            parts["kd"], temperature = self._kd(step / max(self.total_steps - 1, 1), logits, cache, teacher_out)
            total = total + w_kd * parts["kd"]
        if w_hid > 0:
            pairs = list(zip(out.hidden_states[1:], (teacher_out.hidden_states[j] for j in self.map)))
            terms = [hidden_loss(self.proj[i](s) if len(self.proj) else s, t, cfg.hidden_distance) for i, (s, t) in enumerate(pairs)]
            parts["hidden"] = torch.stack(terms).mean()
            total = total + w_hid * parts["hidden"]
        if w_att > 0:
            pairs = zip(out.attentions, (teacher_out.attentions[j - 1] for j in self.map))
            parts["attention"] = torch.stack([attention_loss(s, t, cfg.attention_loss) for s, t in pairs]).mean()
            total = total + w_att * parts["attention"]
        stats = {k: v.detach() for k, v in parts.items()}
        if temperature is not None:
            stats["temperature"] = temperature.mean().detach() if isinstance(temperature, torch.Tensor) else torch.tensor(float(temperature))
        return total, stats


def autocast(device: torch.device, precision: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and precision == "bf16" else nullcontext()


class _Noise:
    """Gaussian noise of ``std`` on the student's embedding output while it trains."""

    def __init__(self, model: nn.Module, std: float):
        self.std = std
        self.handle = model.get_input_embeddings().register_forward_hook(self) if std > 0 else None

    def __call__(self, module, args, out):
        return out + self.std * torch.randn_like(out) if module.training else out

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def train_lm(
    model: nn.Module,
    train_seqs: torch.Tensor,
    val_seqs: torch.Tensor,
    cfg: TextTrainConfig,
    distill: TextDistillConfig | None = None,
    targets: TextTargets | None = None,
    *,
    seed: int = 0,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    device: str = "cpu",
) -> list[EpochStats]:
    """Train ``model`` for ``cfg.epochs`` epochs (continuing after ``resume``'s epoch), with
    the teacher's ``targets`` when given; per-epoch statistics."""
    loop = _LMLoop(model, train_seqs, cfg, distill, targets, seed, torch.device(device))
    first_epoch = loop.resume(resume) if resume is not None else 1
    noise = _Noise(model, distill.noise_std if distill is not None else 0.0)
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            stats = loop.epoch(epoch, val_seqs)
            if on_checkpoint is not None and epoch < cfg.epochs:
                on_checkpoint(loop.state(epoch))
            if on_epoch is not None:
                on_epoch(stats)
    finally:
        noise.remove()
        loop.close()
    return loop.history


class _LMLoop:
    """The state of a run between steps: model, loss, optimizer, RNG, step count, history."""

    def __init__(self, model, train_seqs, cfg: TextTrainConfig, distill, targets: TextTargets | None, seed: int, dev: torch.device):
        self.model, self.train_seqs, self.cfg, self.targets, self.dev = model, train_seqs, cfg, targets, dev
        model.to(dev).train()
        self.steps_per_epoch = cfg.steps_per_epoch or max(len(train_seqs) // cfg.batch_size, 1)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        teacher = targets.teacher if targets is not None else None
        live = targets is not None and targets.values is None
        cached = frozenset(targets.cached_internals) if targets is not None else frozenset()
        t_config = targets.config() if targets is not None else None
        self.loss_fn = TextLoss(distill, model, t_config, self.total_steps, targets is not None, live, cached).to(dev)
        if self.loss_fn.needs_teacher and teacher is None:
            raise ValueError("distill: hidden-state and attention losses (and KD without a cache) need the teacher, which this run does not have")
        self.teacher = teacher.to(dev).eval() if self.loss_fn.needs_teacher else None
        self.params = [*model.parameters(), *self.loss_fn.parameters()]
        groups = [
            {"params": [p for p in self.params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in self.params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
        self.checkpointing = cfg.gradient_checkpointing and dev.type == "cuda"
        if self.checkpointing:
            model.gradient_checkpointing_enable()
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.history: list[EpochStats] = []
        self.step_count = 0
        self.warmup = round(cfg.warmup_fraction * self.total_steps)
        ratio = distill.synthetic_ratio if distill is not None and targets is not None and targets.synthetic is not None else 0.0
        self.n_syn = round(ratio * cfg.batch_size)

    def resume(self, state: dict) -> int:
        """Continue from an epoch checkpoint; returns the next epoch."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("recipe"):
            self.loss_fn.load_state_dict(state["recipe"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count = int(state["step"])
        self.history = [LMEpoch(**{k: v for k, v in h.items() if k in LMEpoch.__dataclass_fields__}, extra=_extra(h)) for h in state["history"]]
        return int(state["epoch"]) + 1

    def state(self, epoch: int) -> dict:
        """What :meth:`resume` takes (plain tensors and values: ``torch.load(weights_only=True)`` reads it)."""
        return {
            "epoch": epoch,
            "step": self.step_count,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "recipe": self.loss_fn.state_dict(),
            "compress": None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [h.as_dict() for h in self.history],
        }

    def step(self) -> dict[str, torch.Tensor]:
        cfg, loss_fn = self.cfg, self.loss_fn
        cached_kd = loss_fn.kd_on and not loss_fn.live_kd
        wanted = {"hidden": loss_fn.hidden_on, "attentions": loss_fn.att_on} if self.teacher is None else {}
        ids, cache, teacher_out = _batch(self.train_seqs, self.targets, cfg.batch_size - self.n_syn, self.n_syn, self.generator, self.dev, cached_kd, wanted)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(self.step_count, self.total_steps, self.warmup)
        internals = {"output_hidden_states": loss_fn.hidden_on, "output_attentions": loss_fn.att_on}
        with autocast(self.dev, cfg.precision):
            out = self.model(input_ids=ids, use_cache=False, **internals)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_out = self.teacher(input_ids=ids, use_cache=False, **internals)
            loss, parts = loss_fn(self.step_count, ids, out, cache, teacher_out)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.opt.step()
        self.step_count += 1
        return {"loss": loss.detach(), **parts}

    def epoch(self, epoch: int, val_seqs: torch.Tensor) -> EpochStats:
        started = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        for _ in range(self.steps_per_epoch):
            for k, v in self.step().items():
                sums[k] = sums.get(k, 0.0) + v.float()
        steps_s = time.perf_counter() - started
        metrics = evaluate(self.model, val_seqs)
        mean = {k: (v / self.steps_per_epoch).item() for k, v in sums.items()}  # one sync per epoch
        stats = LMEpoch(
            epoch=epoch,
            accuracy=metrics["token_accuracy"],
            loss=mean["loss"],
            loss_ce=mean.get("ce", float("nan")),
            loss_kd=mean.get("kd"),
            temperature=mean.get("temperature"),
            lr=self.opt.param_groups[0]["lr"],
            epoch_s=time.perf_counter() - started,
            steps_s=steps_s,
            extra={
                "perplexity": metrics["perplexity"],
                "token_accuracy": metrics["token_accuracy"],
                **{f"loss_{k}": v for k, v in mean.items() if k in ("hidden", "attention")},
            },
        )
        if not math.isfinite(stats.loss):
            raise FloatingPointError(f"the training loss diverged at epoch {epoch} ({stats.loss})")
        self.history.append(stats)
        return stats

    def close(self) -> None:
        if self.checkpointing:
            self.model.gradient_checkpointing_disable()


def _extra(h: dict) -> dict:
    return {k: v for k, v in h.items() if k not in LMEpoch.__dataclass_fields__}


def _batch(train_seqs, targets, n_real, n_syn, generator, dev, kd, wanted):
    """(token ids (B, T), the teacher's top-k cache of them or None, its cached internals
    (``hidden_states`` / ``attentions`` as a teacher forward gives them) or None) of one step;
    ``wanted`` says which internals to read from the cache."""
    idx = torch.randint(len(train_seqs), (n_real,), generator=generator)
    ids = train_seqs[idx]
    rows = idx
    cache = None
    if kd:
        cache = [targets.values[idx], targets.indices[idx], targets.tail[idx]]
    if n_syn:
        sidx = torch.randint(len(targets.synthetic), (n_syn,), generator=generator)
        ids = torch.cat([ids, targets.synthetic[sidx]])
        rows = torch.cat([idx, len(train_seqs) + sidx])  # cached internals: training rows, then synthetic
        if kd:
            cache = [torch.cat([c, s[sidx]]) for c, s in zip(cache, targets.synthetic_cache)]
    ids = ids.to(dev, non_blocking=True)
    if cache is not None:
        cache = tuple(c.to(dev, non_blocking=True) for c in cache)
    teacher_out = None
    if any(wanted.values()):
        teacher_out = SimpleNamespace(
            hidden_states=[h[rows].to(dev).float() for h in targets.hidden] if wanted.get("hidden") else None,
            attentions=[a[rows].to(dev).float() for a in targets.attentions] if wanted.get("attentions") else None,
        )
    return ids, cache, teacher_out
