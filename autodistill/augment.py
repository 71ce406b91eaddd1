"""Random crop and horizontal flip, applied to a whole uint8 batch at once; MixUp and CutMix
on the normalised float batch.

An augmentation is described per sample by ``(dy, dx, flip)`` (an int16 tensor (B, 3)): the
crop's offset in the image padded by ``padding`` pixels on each side, and whether it is
mirrored. Keeping the description apart from the pixels lets a study store the teacher's
outputs on ``V`` fixed augmented views of the training set (``views`` in
:class:`~autodistill.teacher.TeacherTargets`) and a trial rebuild exactly the images the
teacher saw from ``(V, N, 3)`` small integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._errors import ConfigError

MIN_IMAGE_SIZE = 16


def check_augment(cfg, image_size: int, where: str = "config") -> None:
    """Crop and flip are for natural images of 16 px and more (digits' 8x8 strokes are not)."""
    if cfg.crops and image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"{where}: augment.crop_padding / augment.flip need images of at least {MIN_IMAGE_SIZE} px; this dataset's are {image_size} px")


def random_params(n: int, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """(n, 3) int16: crop offsets in [0, 2 * padding] and a flip flag, drawn from ``generator``."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 1), generator=generator) if flip else torch.zeros(n, 1, dtype=torch.long)
    return torch.cat([offsets, flips], dim=1).to(torch.int16)


def apply(x: torch.Tensor, params: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop and mirror each image of ``x`` (B, C, H, W) as ``params`` (B, 3) say; zero padding."""
    b, _, h, w = x.shape
    params = params.to(device=x.device, dtype=torch.long)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    rows = params[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = params[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(params[:, 2:3].bool(), cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced indices first
    return out.permute(0, 3, 1, 2).contiguous()


def view_params(n: int, views: int, padding: int, flip: bool, seed: int = 0) -> torch.Tensor:
    """(views, n, 3): the fixed augmentations whose teacher outputs a study caches."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([random_params(n, padding, flip, generator) for _ in range(views)])


def mix(x: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a float batch (B, C, H, W)
    with a random permutation of itself; returns (mixed batch, permutation, lam), where lam is
    the share of each image's own label (CE = lam CE(y) + (1 - lam) CE(y[perm])).

    lam ~ Beta(a, a) for the method's ``a`` (0 = off); with both on, each batch uses one of
    the two with equal chance. CutMix pastes a box of area ~(1 - lam) from the partner image
    and sets lam to the exact share of pixels left. Random numbers come from ``generator``."""
    methods = [m for m, a in (("mixup", mixup), ("cutmix", cutmix)) if a > 0]
    b, _, h, w = x.shape
    perm = torch.randperm(b, generator=generator)
    if not methods:
        return x, perm, 1.0
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    method = methods[int(rng.integers(len(methods)))]
    a = mixup if method == "mixup" else cutmix
    lam = float(rng.beta(a, a))
    partner = x[perm.to(x.device)]
    if method == "mixup":
        return lam * x + (1 - lam) * partner, perm, lam
    cut_h, cut_w = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + (cut_h + 1) // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + (cut_w + 1) // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
    return out, perm, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
