"""What one fit holds while it runs: its working parts, and where it stands (an epoch checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tasks.train.losses import LossFn
from tasks.train.replica import Replica
from tasks.train.settings import FitSettings


@dataclass
class FitParts:
    """What stays fixed while a fit runs: the model, the module that steps (DDP's wrapper when
    distributed), the optimiser, the schedule, the data-order generator, this process's replica,
    the settings, the normalization (mean, std) and the loss."""

    model: nn.Module
    step_model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    replica: Replica
    settings: FitSettings
    norm: tuple[list[float], list[float]]
    loss_fn: LossFn


@dataclass
class FitState:
    """Where a fit stands: its history, the best val_loss and those weights, the epochs since a
    gain (for early stopping), the epoch to train next, and inside it the global sample
    position reached and the loss summed so far (loss x samples, samples)."""

    history: list[dict]
    best: float
    best_state: dict
    stale: int = 0
    start: int = 1
    position: int = 0
    carry: tuple[float, int] = (0.0, 0)
