"""A small Vision Transformer: patch embedding, class token, pre-norm encoder."""

from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    def __init__(self, in_shape, num_classes: int, patch_size=2, dim=64, depth=3, heads=4,
                 dropout: float = 0.1):
        super().__init__()
        c, h, w = in_shape
        if h % patch_size or w % patch_size:
            raise ValueError(f"vit: image {h}x{w} is not divisible by patch_size {patch_size}")
        if dim % heads:
            raise ValueError(f"vit: dim {dim} is not divisible by heads {heads}")
        n_patches = (h // patch_size) * (w // patch_size)
        self.embed = nn.Conv2d(c, dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim * 2, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        cls = self.cls.expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos  # (N, patches + 1, dim)
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


def build_vit(in_shape, num_classes, patch_size=2, dim=64, depth=3, heads=4, dropout=0.1,
              **_ignored) -> ViT:
    return ViT(tuple(in_shape), num_classes, patch_size, dim, depth, heads, dropout)
