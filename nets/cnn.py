"""The seed's CNN and the default teacher (conv blocks with BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn


class SeedCNN(nn.Module):
    """Conv 32 3x3 -> ReLU -> MaxPool 2 -> Dense 64 -> ReLU -> Dense classes (logits)."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        c, h, w = in_shape
        if h < 4 or w < 4:
            raise ValueError(f"seed_cnn needs images of at least 4x4, got {h}x{w}")
        self.features = nn.Sequential(nn.Conv2d(c, 32, 3), nn.ReLU(), nn.MaxPool2d(2))
        flat = 32 * ((h - 2) // 2) * ((w - 2) // 2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.head(self.features(x))


def conv_block(c_in: int, c_out: int, pool: bool, stride: int = 1) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers (the first strided when asked), then a 2x2 max-pool when
    the map is large enough."""
    layers = [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def auto_stem_stride(in_shape) -> int:
    """2 for inputs of 16 px and more: the first convolution halves the map, so the first
    block costs a quarter (28x28 digits lose nothing a 14x14 map cannot hold); 1 below."""
    return 2 if min(in_shape[1:]) >= 16 else 1


class CNN(nn.Module):
    """Conv blocks with BatchNorm, global average pooling, dropout, linear head.

    stem_stride: the stride of the very first convolution (None: auto_stem_stride).
    """

    def __init__(self, in_shape, num_classes: int, channels=(32, 64, 128), dropout: float = 0.2,
                 stem_stride: int | None = None):
        super().__init__()
        c, h, w = in_shape
        self.stem_stride = auto_stem_stride(in_shape) if stem_stride is None else stem_stride
        blocks, size = [], min(h, w)
        for i, c_out in enumerate(channels):
            stride = self.stem_stride if i == 0 else 1
            size = (size - 1) // stride + 1
            pool = size >= 4  # keep at least a 2x2 map
            blocks.append(conv_block(c, c_out, pool, stride))
            c, size = c_out, size // 2 if pool else size
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.head(self.features(x))


def build_seed_cnn(in_shape, num_classes, dropout: float = 0.0, **_ignored) -> SeedCNN:
    return SeedCNN(tuple(in_shape), num_classes, dropout=dropout)


def build_cnn(in_shape, num_classes, channels=(32, 64, 128), dropout=0.2, stem_stride=None,
              **_ignored) -> CNN:
    return CNN(tuple(in_shape), num_classes, channels=tuple(channels), dropout=dropout,
               stem_stride=stem_stride)
