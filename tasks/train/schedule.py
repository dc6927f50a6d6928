"""The learning-rate schedule, and the epochs that fit a time budget (the schedule shrunk to them)."""

from __future__ import annotations

import logging
import time

import torch

from tasks.train.replica import Replica
from tasks.train.settings import FitSettings

log = logging.getLogger("evergreen.train")


def make_scheduler(opt: torch.optim.Optimizer, settings: FitSettings):
    """settings.lr_schedule over settings.epochs: cosine, step (x0.1 every third), else constant."""
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
    if settings.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, settings.epochs // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def fit_in_time(sched, settings: FitSettings, epoch: int, seconds: float, name: str) -> int:
    """The last epoch that fits settings.max_seconds at this epoch's pace; a cosine schedule is
    stretched to end there, so the shortened run still anneals."""
    fits = epoch - 1 + max(1, int(settings.max_seconds / max(seconds, 1e-9)))
    if fits >= settings.epochs:
        return settings.epochs
    log.info("%s: %.0f s per epoch, so %d of %d epochs fit the time budget of %.0f s", name,
             seconds, fits, settings.epochs, settings.max_seconds)
    if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
        sched.T_max = fits
    return fits


def epochs_in_budget(sched, settings: FitSettings, replica: Replica, epoch: int, began: float,
                     size: tuple[int, int] | None, name: str) -> int:
    """The last epoch that fits the budget, timed on this run's first epoch (the ranks agree)."""
    seconds = replica.sum([time.perf_counter() - began])[0] / replica.world  # ranks agree
    if size is not None:  # a full-size epoch costs about the pixel ratio more
        seconds /= settings.early_scale ** 2
    return fit_in_time(sched, settings, epoch, seconds, name)
