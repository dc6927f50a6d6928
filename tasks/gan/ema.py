"""The generator's exponential moving average, and its BatchNorm statistics re-estimated at the end."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, g: nn.Module, decay: float, step: int) -> None:
    """Move the averaged generator towards g (decay warmed up over the first steps).

    BatchNorm running statistics are copied here and re-estimated for the average at the
    end (`recalibrate_batchnorm`).
    """
    rate = 1.0 - min(decay, (1 + step) / (10 + step))
    for avg, live in zip(ema.parameters(), g.parameters(), strict=True):
        avg.lerp_(live, rate)
    for avg, live in zip(ema.buffers(), g.buffers(), strict=True):
        avg.copy_(live)


@torch.no_grad()
def recalibrate_batchnorm(g: nn.Module, y: torch.Tensor | None, gen: torch.Generator,
                          batches: int = 20, batch: int = 64) -> nn.Module:
    """Re-estimate the BatchNorm statistics of g's own weights (the EMA's differ from the live G's).

    Labels are drawn from y (see `batchnorm_labels`), so classes weigh as they did in training.
    """
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    g.train()
    for _ in range(batches):
        labels = None if y is None else y[torch.randint(0, len(y), (batch,), generator=gen)]
        g(torch.randn(batch, g.latent_dim, generator=gen), labels)
    for m in norms:
        m.momentum = 0.1
    return g.eval()
