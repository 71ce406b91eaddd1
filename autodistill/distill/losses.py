"""Distillation losses. Each is a small module whose docstring gives its formula."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KDLoss(nn.Module):
    """Soft-label distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
    in a Neural Network")::

        L_kd = T^2 * mean_b KL( softmax(z_t / T) || softmax(z_s / T) )

    The T^2 factor keeps the gradient scale of the soft term independent of T, so the fusion
    weight alpha means the same at every temperature. ``reduction='none'`` returns the
    per-sample values (B,).
    """

    def __init__(self, reduction: str = "batchmean"):
        super().__init__()
        if reduction not in ("batchmean", "none"):
            raise ValueError(f"reduction must be 'batchmean' or 'none' but got {reduction!r}.")
        self.reduction = reduction

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        log_p_s = F.log_softmax(student_logits / temperature, dim=-1)  # (B, K)
        log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, K)
        per_sample = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)  # (B,)
        loss = per_sample * temperature**2
        return loss.mean() if self.reduction == "batchmean" else loss


class FusedKDLoss(nn.Module):
    """Hard and soft labels fused by one weight::

        L = (1 - alpha) * CE(z_s, y) + alpha * L_kd(z_s, z_t, T)

    Returns the total and its components, so a trial can report each one.
    """

    def __init__(self):
        super().__init__()
        self.kd = KDLoss()

    def forward(
        self,
        student_logits: torch.Tensor,
        targets: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        alpha: float,
        temperature: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(student_logits, targets)
        if teacher_logits is None or alpha == 0:
            return ce, {"ce": ce.detach()}
        kd = self.kd(student_logits, teacher_logits, temperature)
        total = (1 - alpha) * ce + alpha * kd
        return total, {"ce": ce.detach(), "kd": kd.detach()}
