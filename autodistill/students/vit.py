"""A small Vision Transformer (Dosovitskiy et al. 2021): patch embedding, pre-norm encoder
blocks, mean-pooled tokens, linear head. Usable as student and as teacher.

For distillation :meth:`ViT.forward_distill` returns, besides the logits, each block's tokens
as a map (B, D, h, w), the "stages" feature losses match (the last one after the final norm,
so that the class activation map of a class is exactly its logit's spatial decomposition),
and with ``attention=True`` each block's self-attention matrices (B, heads, N, N).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config._students import ViTDims
from ._registry import register_family


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, d)
        if need_weights:
            attn = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, H, N, N)
            out = attn @ v
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), attn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, attn = self.attn(self.norm1(x), need_weights)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


class ViT(nn.Module):
    is_transformer = True

    def __init__(self, dims: ViTDims, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        if dims.patch_size > image_size:
            raise ValueError(f"vit patch_size {dims.patch_size} is larger than the {image_size} px images")
        dim = math.ceil(dims.embed_dim / dims.heads) * dims.heads
        self.grid = image_size // dims.patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, dims.patch_size, stride=dims.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, dims.heads, dims.mlp_ratio) for _ in range(dims.depth))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dims.dropout)
        self.head = nn.Linear(dim, num_classes)

    def _map(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.grid, self.grid)

    def forward_distill(self, x: torch.Tensor, attention: bool = False):
        """(logits, [each block's tokens as (B, D, h, w)], [attention (B, heads, N, N)] or [])."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        feats, attns = [], []
        for i, block in enumerate(self.blocks):
            x, attn = block(x, attention)
            if i == len(self.blocks) - 1:
                x = self.norm(x)
            feats.append(self._map(x))
            if attn is not None:
                attns.append(attn)
        return self.head(self.drop(x.mean(dim=1))), feats, attns

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_distill(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_distill(x)[0]

    def cam_weight(self) -> torch.Tensor:
        """(K, D): logits = cam_weight @ mean over positions of the last feature map + bias."""
        return self.head.weight


@register_family("vit")
def build_vit(dims: ViTDims, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Vision Transformer: patch embedding, `depth` pre-norm blocks of `heads` heads, mean-pooled head."""
    return ViT(dims, in_channels, num_classes, image_size)
