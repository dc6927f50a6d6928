"""Samples of a generator: its pixel range both ways, fixed-seed images, noise images (the
distance's ceiling) and the sample grid as PNG."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import nn


def to_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float in [-1, 1], the generator's tanh range."""
    x = torch.as_tensor(x)
    return x.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1] -> uint8 pixels, as a saved image would hold them."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


@torch.no_grad()
def sample_images(g: nn.Module, n: int, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """n uint8 images from a fixed seed; a conditional generator draws each class in turn."""
    g.eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, g.latent_dim, generator=gen)
    if g.conditional and labels is None:
        labels = np.arange(n) % g.num_classes
    y = torch.from_numpy(np.asarray(labels)).long() if g.conditional else None
    out = torch.cat([g(z[i:i + 500], None if y is None else y[i:i + 500])
                     for i in range(0, n, 500)])
    return to_uint8(out), (np.asarray(labels) if g.conditional else None)


def noise_images(n: int, in_shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform random uint8 images: the ceiling's reference point."""
    return np.random.default_rng(seed).integers(0, 256, (n, *in_shape), dtype=np.uint8)


def grid_samples(g: nn.Module, classes: list[str], seed: int, per_row: int = 10) -> np.ndarray:
    """Images for the grid: one row per class (conditional, up to 10 classes) or an 8 x 8 block."""
    if g.conditional:
        shown = min(len(classes), 10)
        labels = np.repeat(np.arange(shown), per_row)
        return sample_images(g, len(labels), seed, labels)[0]
    return sample_images(g, 64, seed)[0]


def sample_grid_png(images: np.ndarray, columns: int, scale: int | None = None) -> bytes:
    """uint8 images (N, C, H, W) tiled row by row with 1-pixel gaps, upscaled, as PNG bytes."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    scale = scale or max(1, 48 // max(h, w))
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 64, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = \
            img.transpose(1, 2, 0)
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
