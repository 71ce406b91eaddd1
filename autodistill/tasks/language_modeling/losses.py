"""The losses of language-model distillation, as pure functions of tensors.

**Token-level KD from a top-k cache.** The teacher's logits are cached once per study as the
top-k values (float16) and indices (int32) of every token, plus one float32: the log of the
summed exponentials of every other logit (the tail, ``tail = logsumexp(z_j, j not in top-k)``).
Both distributions are then compared over k + 1 outcomes, the k cached tokens and "any other
token":

    teacher at temperature T: softmax([v_1 .. v_k, tail] / T)
    student at temperature T: its full softmax(z / T) at the k tokens, and the rest of its mass

At T = 1 the teacher's k + 1 probabilities are exact; at T != 1 the tail's mass is that of V - k
equal logits holding it (``log(V-k) + (tail - log(V-k)) / T``), exact when the tail is flat and
an upper bound of it for T > 1. With k equal to the vocabulary the cache is the full
distribution and the loss is exact. At T = 1, merging the tail into one outcome can only lower
a divergence (the data-processing inequality), so KD from the cache is never larger than from
full logits; ``tests/test_text_losses.py`` holds the gap on a trained teacher to a bound.

Divergences (per token, times T^2 so their gradients keep the scale of CE as T changes):
forward KL(p_t || p_s), reverse KL(p_s || p_t), and JSD with beta 1/2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG = -1e4
"""stands for log 0 (an empty tail): finite, so 0 * log 0 terms stay 0 rather than NaN"""


def topk_cache(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values float16 (..., k), indices int32 (..., k), tail log-mass float32 (...)) of full
    ``logits`` (..., V) at T = 1 (see the module doc)."""
    logits = logits.float()
    k = min(k, logits.shape[-1])
    values, indices = logits.topk(k, dim=-1)
    rest = logits.scatter(-1, indices, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1).clamp_min(NEG)
    return values.half(), indices.int(), tail


def cache_bytes_per_token(k: int) -> int:
    """Bytes the top-k cache stores per token: k float16 values, k int32 indices, one float32 tail."""
    return k * (2 + 4) + 4


def teacher_buckets(values: torch.Tensor, tail: torch.Tensor, temperature, vocab_size: int) -> torch.Tensor:
    """log-probabilities (..., k + 1) of the teacher over its top-k tokens and the tail at
    ``temperature``, the tail's mass spread evenly over its V - k tokens (exact at T = 1)."""
    t = _t(temperature, values)
    n = max(vocab_size - values.shape[-1], 1)
    log_n = math.log(n)
    tail_t = log_n + (tail.float()[..., None] - log_n) / t  # log sum over the tail of exp(z_j / T), each z_j = tail - log n
    tail_t = torch.where(tail.float()[..., None] <= NEG, torch.full_like(tail_t, NEG), tail_t)
    return torch.log_softmax(torch.cat([values.float() / t, tail_t], dim=-1), dim=-1)


def student_buckets(logits: torch.Tensor, indices: torch.Tensor, temperature) -> torch.Tensor:
    """log-probabilities (..., k + 1) of the student at the teacher's top-k tokens and on the
    rest of its vocabulary, from its full softmax at ``temperature``."""
    t = _t(temperature, logits)
    scaled = logits.float() / t
    lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
    idx = indices.long()
    top = scaled.gather(-1, idx) - lse
    rest = torch.logsumexp(scaled.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True).clamp_min(NEG) - lse
    return torch.cat([top, rest], dim=-1)


def _t(temperature, like: torch.Tensor):
    if isinstance(temperature, torch.Tensor) and temperature.ndim:
        return temperature.to(like.device)[..., None]  # per token
    return temperature


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(kind: str, log_t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """Per-token divergence between teacher and student log-probabilities (..., n): forward_kl,
    reverse_kl or jsd."""
    if kind == "forward_kl":
        return _kl(log_t, log_s)
    if kind == "reverse_kl":
        return _kl(log_s, log_t)
    if kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_t, log_s]), dim=0) - math.log(2.0)
        return 0.5 * _kl(log_t, log_m) + 0.5 * _kl(log_s, log_m)
    raise ValueError(f"unknown KD loss {kind!r}")


def kd_per_token(kind: str, student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, tail: torch.Tensor, temperature) -> torch.Tensor:
    """T^2 * divergence per token (...,) between the cached teacher and the student's logits."""
    log_t = teacher_buckets(values, tail, temperature, student_logits.shape[-1])
    log_s = student_buckets(student_logits, indices, temperature)
    t = _t(temperature, student_logits)
    scale = t.squeeze(-1) ** 2 if isinstance(t, torch.Tensor) else t**2
    return scale * divergence(kind, log_t, log_s)


def kd_full_per_token(kind: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature) -> torch.Tensor:
    """The same divergence from full teacher logits (``distill.top_k: 0``, the teacher run on
    every batch; and the reference the cache is measured against)."""
    t = _t(temperature, student_logits)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    scale = t.squeeze(-1) ** 2 if isinstance(t, torch.Tensor) else t**2
    return scale * divergence(kind, log_t, log_s)


@torch.no_grad()
def normalised_entropy(values: torch.Tensor, tail: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The teacher's entropy per token over its k + 1 buckets at T = 1, divided by log V, in [0, 1]."""
    log_p = teacher_buckets(values, tail, 1.0, vocab_size)
    return (-(log_p.exp() * log_p).sum(-1) / math.log(vocab_size)).clamp(0.0, 1.0)


@torch.no_grad()
def normalised_entropy_full(logits: torch.Tensor) -> torch.Tensor:
    """The teacher's entropy per token from its full logits, divided by log V, in [0, 1]."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return (-(log_p.exp() * log_p).sum(-1) / math.log(logits.shape[-1])).clamp(0.0, 1.0)


@torch.no_grad()
def entropy_weights(entropy: torch.Tensor) -> torch.Tensor:
    """Per-token weights from the teacher's normalised entropy (:func:`normalised_entropy`),
    scaled to mean 1 over the batch: the teacher's unsure tokens weigh more. Detached."""
    h = entropy.clamp_min(1e-6)
    return h / h.mean()


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """The teacher layer (1-based, as in ``hidden_states``; 0 is the embeddings) each student
    layer 1..n_student is matched with: the same relative depth, round(i * n_teacher / n_student)."""
    return [max(1, round(i * n_teacher / n_student)) for i in range(1, n_student + 1)]


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, distance: str) -> torch.Tensor:
    """Distance between a (projected) student hidden state and the teacher's, (B, T, H):
    mse (mean over elements) or cosine (mean of 1 - cosine similarity per token)."""
    if distance == "mse":
        return F.mse_loss(student.float(), teacher.float())
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def match_heads(teacher: torch.Tensor, n_student: int) -> torch.Tensor:
    """Teacher attention (B, Ht, T, T) brought to the student's head count: as is when equal,
    groups of Ht / Hs heads averaged when Hs divides Ht, else every head averaged into one
    (the student's heads are then averaged too, see :func:`attention_loss`)."""
    b, ht, tq, tk = teacher.shape
    if ht == n_student:
        return teacher
    if ht % n_student == 0:
        return teacher.view(b, n_student, ht // n_student, tq, tk).mean(dim=2)
    return teacher.mean(dim=1, keepdim=True)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss between attention matrices (B, H, T, T) (rows are probability distributions over
    the keys; the causal mask's zeros included):

    - kl: KL(teacher row || student row), mean over rows;
    - frobenius: ||A_t - A_s||_F^2 / T per (batch, head), mean; i.e. the mean squared L2
      distance of a row.
    """
    teacher = match_heads(teacher.float(), student.shape[1])
    student = student.float()
    if teacher.shape[1] != student.shape[1]:
        student = student.mean(dim=1, keepdim=True)
    if kind == "kl":
        log_s = student.clamp_min(1e-8).log()
        return (torch.xlogy(teacher, teacher) - teacher * log_s).sum(-1).mean()
    return (teacher - student).pow(2).sum(-1).mean()
