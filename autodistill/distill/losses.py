"""Distillation losses. Each is a small module whose docstring gives its formula."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# --- soft targets of one or several teachers -------------------------------------------


def teacher_probs(teacher_logits: torch.Tensor, temperature: float | torch.Tensor = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft targets (B, K): ``softmax(z_t / T)``; for a stack of teachers (M, B, K) the
    weighted mean of their softmaxes, ``sum_m w_m softmax(z_m / T)`` (``weights`` (M,) sum
    to 1; equal when None)."""
    if teacher_logits.ndim == 2:
        return F.softmax(teacher_logits / temperature, dim=-1)
    if weights is None:
        weights = torch.full((teacher_logits.shape[0],), 1.0 / teacher_logits.shape[0], device=teacher_logits.device)
    return torch.einsum("m,mbk->bk", weights.to(teacher_logits), F.softmax(teacher_logits / temperature, dim=-1))


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-label distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
    in a Neural Network") per sample (B,)::

        L_kd = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

    The T^2 factor keeps the gradient scale of the soft term independent of T, so the fusion
    weight alpha means the same at every temperature. ``teacher_logits`` (B, K), or a stack
    (M, B, K) whose soft targets are mixed by :func:`teacher_probs`. The trial's loss is its
    mean over the batch (:class:`autodistill.distill.DistillLoss`)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    if teacher_logits.ndim == 2:
        log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
        per_sample = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)
    else:
        p_t = teacher_probs(teacher_logits, temperature, weights)
        per_sample = (torch.special.xlogy(p_t, p_t) - p_t * log_p_s).sum(dim=-1)  # 0 log 0 = 0
    return per_sample * temperature**2


def sample_weights(probs: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample KD weights (B,) with mean 1 from the teacher's probabilities (B, K):
    ``confidence``: proportional to 1 - max_k p; ``entropy``: to H(p) / log K. Harder inputs
    (an unsure teacher) get more of the teacher's soft targets; a batch the teacher is sure
    of everywhere gets uniform weights."""
    if mode == "none":
        return torch.ones(probs.shape[0], device=probs.device)
    if mode == "confidence":
        u = 1 - probs.max(dim=-1).values
    elif mode == "entropy":
        u = _entropy(probs)
    else:
        raise ValueError(f"unknown sample weighting {mode!r}")
    mean = u.mean()
    return u / mean if mean > 1e-8 else torch.ones_like(u)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) / log K per sample (B,), in [0, 1]."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1) / math.log(probs.shape[-1])


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of H(p) / log K, in [0, 1] (what the adaptive temperature reads)."""
    return _entropy(probs).mean()


# --- intermediate features (FitNets) and attention transfer ---------------------------


def align_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two maps (B, *, H, W) average-pooled to their common (smallest) size."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    if a.shape[-2:] != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if b.shape[-2:] != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, distance: str = "mse") -> torch.Tensor:
    """FitNets hint loss (Romero et al. 2015) between a projected student map and the
    teacher's (both (B, C, H, W), same C; spatial sizes are pooled to the smaller):

    - mse:    mean over all elements of (s - t)^2
    - cosine: mean over batch and positions of 1 - cos(s[:, :, i, j], t[:, :, i, j])
    """
    s, t = align_spatial(student, teacher)
    if distance == "mse":
        return F.mse_loss(s, t)
    if distance == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()
    raise ValueError(f"unknown feature distance {distance!r}")


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention map (Zagoruyko & Komodakis 2017): ``mean_c |A_c|^p``, flattened and
    L2-normalised per sample: (B, C, H, W) -> (B, H*W)."""
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``mean over batch and positions of (Q_s - Q_t)^2`` with Q the normalised attention maps
    (the reference implementation's ``(at(x) - at(y)).pow(2).mean()``); channel counts may
    differ, spatial sizes are pooled to the smaller."""
    s, t = align_spatial(student, teacher)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


def class_activation_map(feature: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CAM of each sample's class (Zhou et al. 2016): ``sum_c W[y, c] * A_c`` for a network
    whose logits are ``W @ global_avg_pool(A) + b``: (B, C, H, W) -> (B, H*W)."""
    return torch.einsum("bchw,bc->bhw", feature, weight[labels]).flatten(1)


def cam_loss(student_feature, student_weight, teacher_feature, teacher_weight, labels) -> torch.Tensor:
    """MSE between the L2-normalised class activation maps of the true class, student vs
    teacher (spatial sizes pooled to the smaller)."""
    s, t = align_spatial(student_feature, teacher_feature)
    cam_s = F.normalize(class_activation_map(s, student_weight, labels), dim=1)
    cam_t = F.normalize(class_activation_map(t, teacher_weight, labels), dim=1)
    return (cam_s - cam_t).pow(2).mean()


def _pool_attention(attn: torch.Tensor, grid: int) -> torch.Tensor:
    """Attention (B, H, N, N) over a g x g token grid brought to ``grid`` x ``grid`` tokens:
    keys summed and queries averaged over the pooled cells, rows renormalised."""
    b, h, n, _ = attn.shape
    g = math.isqrt(n)
    keys = F.adaptive_avg_pool2d(attn.reshape(b * h * n, 1, g, g), grid).reshape(b * h, g, g, grid * grid)
    queries = F.adaptive_avg_pool2d(keys.permute(0, 3, 1, 2), grid)  # (BH, N', grid, grid)
    out = queries.permute(0, 2, 3, 1).reshape(b, h, grid * grid, grid * grid)
    return out / out.sum(dim=-1, keepdim=True)


def attention_matrix_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Self-attention distillation (MiniLM, Wang et al. 2020): mean over batch, heads and
    query rows of ``KL(A_t[row] || A_s[row])``. Attention is (B, heads, N, N); when the head
    counts differ both are averaged over heads, when the token grids differ the larger is
    pooled to the smaller."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    ns, nt = student.shape[-1], teacher.shape[-1]
    if ns > nt:
        student = _pool_attention(student, math.isqrt(nt))
    elif nt > ns:
        teacher = _pool_attention(teacher, math.isqrt(ns))
    kl = torch.special.xlogy(teacher, teacher) - teacher * torch.log(student.clamp_min(1e-12))
    return kl.sum(dim=-1).mean()


def stage_pairs(student_stages: int, teacher_stages: int, selected: list[int]) -> list[tuple[int, int]]:
    """Each selected student stage with the teacher stage at the same relative depth:
    student stage i of S goes with teacher stage ``ceil((i + 1) * T / S) - 1`` (the last with
    the last)."""
    return [(i, math.ceil((i + 1) * teacher_stages / student_stages) - 1) for i in selected]
