"""Augmentation: one random warp (rotation, zoom, crop, shift) and colour jitter per sample."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augment:
    """Resolved ranges (no preset, no nulls): what the fit loop applies and the card records."""

    shift: float = 0.1  # max shift, fraction of the size
    rotation: float = 10.0  # max degrees
    scale: float = 0.1  # max relative zoom, in or out
    crop: float = 1.0  # random-resized crop: smallest share of the area kept (1: none)
    jitter: float = 0.0  # brightness, contrast, saturation: up to this share
    hflip: bool = False
    vflip: bool = False

    def as_dict(self) -> dict:
        """The ranges as the card and a DDP job record them."""
        return dataclasses.asdict(self)


PRESETS = {
    # digits and letters: small affine warps; a flip turns a 2 into an S
    "characters": Augment(shift=0.1, rotation=10.0, scale=0.1),
    # photos: random-resized crop (zoom and framing), a little rotation, mild colour jitter;
    # hflip is decided from the data (tasks.train.adapt.mirror_twins)
    "photos": Augment(shift=0.0, rotation=5.0, scale=0.0, crop=0.6, jitter=0.2, hflip=True),
}


def _warp(x: torch.Tensor, aug: Augment, gen: torch.Generator, n: int, part: slice,
          size: tuple[int, int] | None = None) -> torch.Tensor:
    """One random rotation, zoom, shift and crop per sample, resampled at `size` when given."""
    rand = lambda: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731 - uniform in [-1, 1)
    angle = rand() * math.radians(aug.rotation)
    zoom = 1 + rand() * aug.scale
    tx, ty = rand() * aug.shift * 2, rand() * aug.shift * 2
    wx = wy = 1 / zoom  # the sampled window's half-extent, in [-1, 1] grid units
    if aug.crop < 1.0:  # Inception-style: area in [crop, 1], aspect ratio in [3/4, 4/3]
        area = aug.crop + (1 - aug.crop) * (rand() + 1) / 2
        aspect = torch.exp(rand() * math.log(4 / 3))
        cx, cy = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
        tx, ty = tx + rand() * (1 - cx), ty + rand() * (1 - cy)
        wx, wy = wx * cx, wy * cy
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * wx, -sin * wy, tx], 1),
                         torch.stack([sin * wx, cos * wy, ty], 1)], 1)  # (n, 2, 3)
    theta = theta[part].to(x.device, x.dtype)
    grid = F.affine_grid(theta, [*x.shape[:2], *(size or x.shape[-2:])], align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _flip(out: torch.Tensor, gen: torch.Generator, n: int, part: slice, dim: int) -> torch.Tensor:
    """Flip half the samples (drawn for the global batch) along `dim`."""
    flip = (torch.rand(n, generator=gen) < 0.5)[part].to(out.device)
    out[flip] = out[flip].flip(dim)
    return out


def _jitter(x: torch.Tensor, strength: float, gen: torch.Generator, n: int, part: slice,
            norm: tuple[list[float], list[float]]) -> torch.Tensor:
    """Brightness, contrast and (colour images) saturation, applied to pixels in [0, 1]."""
    factor = lambda: (1 + (torch.rand(n, generator=gen) * 2 - 1) * strength)[part].view(-1, 1, 1, 1)  # noqa: E731
    mean = torch.tensor(norm[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(norm[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    raw = x * std + mean
    raw = raw * factor().to(x)
    level = raw.mean(dim=(1, 2, 3), keepdim=True)
    raw = (raw - level) * factor().to(x) + level
    if x.shape[1] == 3:
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        gray = (raw * luma).sum(1, keepdim=True)
        raw = (raw - gray) * factor().to(x) + gray
    return (raw.clamp(0.0, 1.0) - mean) / std


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator, n: int | None = None,
                  part: slice = slice(None), norm: tuple[list[float], list[float]] | None = None,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """Warp, flip and jitter a normalized batch (`norm` undoes the normalization for jitter),
    sampled at `size` (h, w) when given (progressive resizing: the warp resamples anyway).

    A DDP rank passes its `part` of a global batch of `n`: the draws are the global batch's,
    so every rank's generator stays in step and the warps match one process's.
    """
    n = len(x) if n is None else n
    out = _warp(x, aug, gen, n, part, size)
    if aug.hflip:
        out = _flip(out, gen, n, part, -1)
    if aug.vflip:
        out = _flip(out, gen, n, part, -2)
    if aug.jitter > 0 and norm is not None:
        out = _jitter(out, aug.jitter, gen, n, part, norm)
    return out
