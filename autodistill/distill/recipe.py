"""The loss of one trial: which terms are on, their weights at each step, the projectors of
feature distillation and gradient balancing.

    total = w_ce * CE + w_kd * T^2 * KL + w_feat * sum(feature) + w_att * sum(attention)

The projectors (1x1 convolutions from a student stage's channels to its teacher stage's) are
parameters of this module, trained with the student and never part of it: an exported student
has none.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DistillConfig, parse_stages
from .losses import (
    attention_matrix_loss,
    attention_transfer_loss,
    cam_loss,
    feature_loss,
    kd_per_sample,
    normalized_entropy,
    sample_weights,
    stage_pairs,
    teacher_probs,
)
from .schedules import kd_weight_at, temperature_at

TERMS = ("ce", "kd", "feat", "att")
BALANCE_CLAMP = (0.5, 2.0)


def wants_kd(cfg: DistillConfig) -> bool:
    """Whether a (resolved) recipe has a soft-label term at some step."""
    return cfg.alpha > 0 or (cfg.alpha_end or 0) > 0


def wants_teacher(cfg: DistillConfig | None) -> bool:
    """Whether a (resolved) recipe needs the teacher at all: a soft-label, feature or attention term."""
    return cfg is not None and (wants_kd(cfg) or cfg.feature_weight > 0 or cfg.attention_weight > 0)


def _outputs(model: nn.Module, x: torch.Tensor, attention: bool = False):
    """(logits, stage maps, attention matrices) of a network of the student families."""
    forward = getattr(model, "forward_distill", None)
    if forward is None:
        raise ValueError(f"{type(model).__name__} gives no stage outputs: feature and attention losses need networks of the student families")
    return forward(x, attention)


class DistillLoss(nn.Module):
    """The fused loss for ``cfg`` (a resolved trial config) between ``student`` and the
    primary ``teacher`` module (needed for feature and attention terms; None otherwise).
    ``example`` (1, C, H, W), a normalised input, probes the stage shapes. ``kd`` says whether
    soft targets are available; ``teacher_weights`` weight a stack of teachers' soft targets."""

    def __init__(
        self,
        cfg: DistillConfig | None,
        student: nn.Module,
        teacher: nn.Module | None,
        example: torch.Tensor | None,
        epochs: int,
        kd: bool,
        teacher_weights: list[float] | None = None,
    ):
        super().__init__()
        self.cfg = cfg or DistillConfig(alpha=0.0)
        cfg = self.cfg
        self.uses_teacher = kd
        self.kd = kd and wants_kd(cfg)
        self.epochs = epochs
        self.feat_on = kd and cfg.feature_weight > 0
        self.att_on = kd and cfg.attention_weight > 0
        self.stage1_epochs = min(round(cfg.stage1_fraction * epochs), epochs - 1) if self.feat_on else 0
        w = torch.tensor(teacher_weights or [1.0], dtype=torch.float32)
        self.register_buffer("teacher_weights", w / w.sum(), persistent=False)
        self.projectors = nn.ModuleList()
        self.pairs: list[tuple[int, int]] = []
        self.matrix_pairs: list[tuple[int, int]] = []
        self.att_kind = cfg.attention_type
        if not (self.feat_on or self.att_on):
            return
        if teacher is None:
            raise ValueError("feature and attention losses need the teacher network")
        was = student.training
        student.eval()  # the probe changes no statistics and draws no random numbers
        with torch.no_grad():
            _, s_feats, _ = _outputs(student, example)
            _, t_feats, _ = _outputs(teacher, example)
        student.train(was)
        selected = parse_stages(cfg.feature_stages, len(s_feats))
        self.pairs = stage_pairs(len(s_feats), len(t_feats), selected)
        if self.feat_on:
            for i, j in self.pairs:
                self.projectors.append(nn.Conv2d(s_feats[i].shape[1], t_feats[j].shape[1], 1).to(example.device))
        if self.att_kind == "matrix":
            if getattr(student, "is_transformer", False) and getattr(teacher, "is_transformer", False):
                self.matrix_pairs = stage_pairs(len(s_feats), len(t_feats), list(range(len(s_feats))))
            else:  # a conv student in a study whose teacher is a ViT: attention transfer on the maps
                self.att_kind = "spatial"

    @property
    def needs_teacher_features(self) -> bool:
        return self.feat_on or self.att_on

    @property
    def needs_attention_matrices(self) -> bool:
        return self.att_on and self.att_kind == "matrix"

    def stage(self, epoch: int) -> int:
        """1 while only the feature loss trains (staged training), else 2."""
        return 1 if epoch <= self.stage1_epochs else 2

    def weights(self, progress: float, epoch: int) -> dict[str, float]:
        """Each term's weight at this step (0 = not computed)."""
        cfg = self.cfg
        if self.stage(epoch) == 1:
            return {"ce": 0.0, "kd": 0.0, "feat": cfg.feature_weight, "att": 0.0}
        kd = kd_weight_at(cfg, progress) if self.kd else 0.0
        ce = cfg.ce_weight if cfg.ce_weight is not None else 1.0 - kd
        return {
            "ce": ce,
            "kd": kd,
            "feat": cfg.feature_weight if self.feat_on else 0.0,
            "att": cfg.attention_weight if self.att_on else 0.0,
        }

    def temperature(self, progress: float, teacher_stack: torch.Tensor | None):
        """The temperature of this step; the adaptive schedule reads the teacher's entropy."""
        if self.cfg.temperature.schedule == "adaptive":
            probs = teacher_probs(teacher_stack.float(), 1.0, self.teacher_weights if teacher_stack.ndim == 3 else None)
            return temperature_at(self.cfg.temperature, progress, normalized_entropy(probs))
        return temperature_at(self.cfg.temperature, progress)

    def components(
        self,
        weights: dict[str, float],
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
        teacher_stack: torch.Tensor | None = None,
        temperature: float | torch.Tensor = 1.0,
        student_feats: list[torch.Tensor] | None = None,
        student_attns: list[torch.Tensor] | None = None,
        teacher_feats: list[torch.Tensor] | None = None,
        teacher_attns: list[torch.Tensor] | None = None,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms whose weight is non-zero, plus CE always (it is cheap and
        always reported). With MixUp/CutMix the CE is ``lam CE(y_a) + (1 - lam) CE(y_b)``."""
        logits = logits.float()
        ce = F.cross_entropy(logits, labels)
        if labels_b is not None and lam < 1.0:
            ce = lam * ce + (1 - lam) * F.cross_entropy(logits, labels_b)
        out = {"ce": ce}
        cfg = self.cfg
        if weights["kd"] > 0 and teacher_stack is not None:
            stack = teacher_stack.float()
            tw = self.teacher_weights if stack.ndim == 3 else None
            per_sample = kd_per_sample(logits, stack, temperature, tw)
            if cfg.sample_weighting != "none":
                per_sample = per_sample * sample_weights(teacher_probs(stack, 1.0, tw), cfg.sample_weighting)
            kd = per_sample.mean()
            if cfg.kd_clamp is not None:  # the value becomes the cap, the gradient shrinks with it
                kd = torch.where(kd > cfg.kd_clamp, kd * (cfg.kd_clamp / kd.detach().clamp_min(1e-12)), kd)
            out["kd"] = kd
        if weights["feat"] > 0:
            out["feat"] = sum(
                feature_loss(proj(student_feats[i].float()), teacher_feats[j].float(), cfg.feature_distance)
                for proj, (i, j) in zip(self.projectors, self.pairs)
            )
        if weights["att"] > 0:
            if self.att_kind == "matrix":
                out["att"] = sum(attention_matrix_loss(student_attns[i].float(), teacher_attns[j].float()) for i, j in self.matrix_pairs)
            elif self.att_kind == "cam":
                y = labels if labels_b is None or lam >= 0.5 else labels_b  # the larger share of a mixed image
                out["att"] = cam_loss(student_feats[-1].float(), student.cam_weight(), teacher_feats[-1].float(), teacher.cam_weight().detach(), y)
            else:
                out["att"] = sum(attention_transfer_loss(student_feats[i].float(), teacher_feats[j].float(), cfg.attention_p) for i, j in self.pairs)
        return out

    def combine(self, terms: dict[str, torch.Tensor], weights: dict[str, float], params: list[torch.Tensor] | None = None):
        """``sum_k w_k L_k``; with ``balance: gradnorm`` each weighted term is first scaled by
        ``clamp(mean_j g_j / g_k, 0.5, 2)``, g_k the norm of its gradient on ``params`` (the
        student's). Returns (total, {term: scale}) (no scales without balancing)."""
        weighted = {k: weights[k] * v for k, v in terms.items() if weights.get(k, 0) > 0}
        if not weighted:  # every weight is 0 (e.g. ce_weight 0 with no teacher): nothing to learn, but a defined loss
            return terms["ce"] * 0.0, {}
        scales: dict[str, float] = {}
        if self.cfg.balance == "gradnorm" and len(weighted) > 1 and params:
            norms = {}
            for k, v in weighted.items():
                grads = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
                norms[k] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None) + 0.0)
            live = {k: n for k, n in norms.items() if float(n) > 0}
            if live:
                mean = sum(live.values()) / len(live)
                lo, hi = BALANCE_CLAMP
                scales = {k: (float((mean / live[k]).clamp(lo, hi)) if k in live else 1.0) for k in weighted}
        total = sum(scales.get(k, 1.0) * v for k, v in weighted.items())
        return total, scales


def teacher_forward(teacher: nn.Module, x: torch.Tensor, attention: bool):
    """(logits, stage maps, attention matrices) of the teacher, without gradients."""
    with torch.no_grad():
        return _outputs(teacher, x, attention)


def student_forward(student: nn.Module, x: torch.Tensor, features: bool, attention: bool):
    if not features:
        return student(x), None, None
    return _outputs(student, x, attention)
