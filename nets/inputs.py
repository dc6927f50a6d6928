"""A classifier's inputs: uint8 pixels scaled as the card's per-channel mean and std describe."""

from __future__ import annotations

import torch


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] then standardized per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
