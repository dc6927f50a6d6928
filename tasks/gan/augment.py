"""DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout, applied to
the discriminator's inputs, real and fake alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout, per image."""
    n = len(x)
    if "color" in policy:
        x = x + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)  # brightness
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=gen) * 2) + mean  # saturation
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=gen) + 0.5) + mean  # contrast
    if "translation" in policy:
        x = translate(x, ratio=0.125, gen=gen)
    if "cutout" in policy:
        x = cutout(x, ratio=0.5, gen=gen)
    return x


def translate(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ratio x its side, filling with 0 (mid-grey in [-1, 1])."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen)
    b, i, j = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    i, j = (i + dy + 1).clamp(0, h + 1), (j + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    return padded[b, i, j].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Zero one square of ratio x the side at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen)
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen)
    b, i, j = torch.meshgrid(torch.arange(n), torch.arange(ch), torch.arange(cw), indexing="ij")
    mask = torch.ones(n, h, w)
    mask[b, (i + top - ch // 2).clamp(0, h - 1), (j + left - cw // 2).clamp(0, w - 1)] = 0
    return x * mask.unsqueeze(1)
