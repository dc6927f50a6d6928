"""Train: fit a network on the train split with early stopping on the validation loss.

`fit` reads straight through: set up, resume, then per epoch train, validate, record, keep the
best weights, checkpoint, and stop early or when the time budget runs out.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.data import subset
from tasks.train.augment import augment_batch
from tasks.train.checkpoint import resume_fit, save_fit
from tasks.train.feed import Inputs, plan_epoch, read_batches, to_inputs
from tasks.train.losses import LossFn, cross_entropy_loss, l1_penalty, val_loss_and_accuracy
from tasks.train.progress import Progress
from tasks.train.replica import Replica
from tasks.train.schedule import epochs_in_budget, make_scheduler
from tasks.train.settings import FitSettings
from tasks.train.state import FitParts, FitState

log = logging.getLogger("evergreen.train")


def fit(model: nn.Module, train: tuple, val: tuple, norm: tuple[list[float], list[float]],
        settings: FitSettings, *, name: str = "train", loss_fn: LossFn = cross_entropy_loss,
        checkpoint: Path | None = None, checkpoint_key: str = "", replica: Replica | None = None,
        on_epoch: Callable[[dict, int], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Mini-batch training on (images, labels) splits, the images uint8 arrays or
    tasks.data.Images read batch by batch; returns the best model and per-epoch history.

    With the `replica` of a DDP worker (tasks.train.worker), settings.batch_size is the global
    batch: each rank reads and steps on its share (tasks.train.feed), validates on its slice of
    val, and the leader alone writes the checkpoint; the updates are those of one process with
    the same batch. A checkpoint is written at each epoch's end and every
    settings.checkpoint_every_s inside one; a resumed run continues at the recorded position.
    """
    replica = fit_replica(replica, model)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    mine = replica.part(len(val[1]))
    x_val = Inputs(subset(val[0], np.arange(len(val[1]))[mine]), norm, replica)
    y_val = replica.to_device(torch.from_numpy(val[1][mine]))
    parts = fit_parts(model, settings, replica, gen, norm, loss_fn)
    saver = Saver(checkpoint, checkpoint_key, settings.checkpoint_every_s, parts)
    fresh = FitState([], math.inf, copy.deepcopy(parts.model.state_dict()))
    state = resume_fit(parts, checkpoint, checkpoint_key, name) or fresh
    patience = math.inf if settings.patience is None else settings.patience
    if state.stale >= patience:  # the checkpointed run had already stopped early
        state.start = settings.epochs + 1
    epochs, began = settings.epochs, time.perf_counter()
    with Progress(name, settings.epochs) as progress:
        for epoch in range(state.start, settings.epochs + 1):
            if epoch > epochs:
                break
            size = settings.input_size(epoch, epochs, train[0].shape)
            train_loss = train_epoch(parts, train, epoch, size, state, saver)
            val_loss, val_acc = val_loss_and_accuracy(parts.model, x_val, y_val, replica)
            row = history_row(epoch, train_loss, val_loss, val_acc, parts.opt, name)
            state.history.append(row)
            if settings.max_seconds and epoch == state.start:
                epochs = epochs_in_budget(parts.sched, settings, replica, epoch, began, size, name)
            if on_epoch is not None and replica.leader:
                on_epoch(row, epochs)  # e.g. the flow's progress artifact (epochs after any time cap)
            log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_acc=%.4f", epoch, settings.epochs,
                     row["train_loss"], val_loss, val_acc)
            progress.advance(f"{name} epoch {epoch} val_acc={val_acc:.3f}")
            track_best(state, val_loss, parts.model, settings.min_delta)
            state.position, state.carry = 0, (0.0, 0)
            saver.save(epoch, state, final=True)
            if state.stale >= patience:
                log.info("%s: early stop at epoch %d (no val_loss gain for %d epochs)",
                         name, epoch, state.stale)
                break
    parts.model.load_state_dict(state.best_state)
    return parts.model.to(memory_format=torch.contiguous_format).eval(), state.history


def uses_conv(model: nn.Module) -> bool:
    """Whether channels_last pays: it does for conv nets on this CPU too (oneDNN's native
    layout; the default teacher trains 1.15-1.3x faster), so fit trains them that way."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def fit_replica(replica: Replica | None, model: nn.Module) -> Replica:
    """This process's replica (by default a job of one process), channels_last for conv nets."""
    replica = replica or Replica()
    if not replica.channels_last and uses_conv(model):
        replica = dataclasses.replace(replica, channels_last=True)
    return replica


def fit_parts(model: nn.Module, settings: FitSettings, replica: Replica, gen: torch.Generator,
              norm: tuple[list[float], list[float]], loss_fn: LossFn) -> FitParts:
    """The model on the replica's device (in DDP when distributed), AdamW and the schedule."""
    model = replica.prepare(model)
    step_model = replica.wrap(model)  # DDP when distributed; the same module otherwise
    # fused: one kernel per step over all parameters instead of a dozen per-tensor ops
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.l2,
                            fused=next(model.parameters()).device.type in ("cpu", "cuda"))
    return FitParts(model, step_model, opt, make_scheduler(opt, settings), gen, replica, settings,
                    norm, loss_fn)


class Saver:
    """Writes the fit's checkpoint (the leader alone): at each epoch's end, and inside an epoch
    once every_s seconds have passed since the last one (0: after every batch)."""

    def __init__(self, path: Path | None, key: str, every_s: float | None, parts: FitParts):
        self.path, self.key, self.every_s, self.parts = path, key, every_s, parts
        self.last = time.monotonic()

    def save(self, epoch: int, state: FitState, final: bool = False) -> None:
        if self.path is None or not self.parts.replica.leader:
            return
        if not final and (self.every_s is None or time.monotonic() - self.last < self.every_s):
            return
        save_fit(self.path, self.key, epoch, self.parts, state, done=final)
        self.last = time.monotonic()


def train_epoch(parts: FitParts, train: tuple, epoch: int, size: tuple[int, int] | None,
                state: FitState, saver: Saver) -> float:
    """One pass over the train split in the sampler's order, from the recorded position when
    resuming inside the epoch; the mean loss over all ranks."""
    replica, settings = parts.replica, parts.settings
    if not state.position:
        replica.seed_epoch(settings.seed, epoch)
    parts.step_model.train()
    plan = plan_epoch(train[0], settings.seed, epoch, settings.shuffle_window, settings.streams,
                      replica)
    steps = list(plan.batches(settings.batch_size, state.position))
    loader = read_batches(train[0], train[1], [idx[mine] for _, idx, mine in steps],
                          settings.loader_workers, replica)
    total, seen = state.carry
    for (after, idx, mine), (xb, yb) in zip(steps, loader, strict=True):
        loss = train_batch(parts, xb, yb, torch.from_numpy(mine), len(idx), size)
        # summed over ranks, the shares add up to the global batch's loss x len(idx)
        total, seen = total + loss * len(idx) / replica.world, seen + len(idx)
        state.position, state.carry = after, (total, seen)
        if after < len(plan.order):
            saver.save(epoch, state)
    parts.sched.step()
    total = replica.sum([total])[0]
    return total / max(seen, 1)


def train_batch(parts: FitParts, xb: torch.Tensor, yb: torch.Tensor, mine: torch.Tensor, n: int,
                size: tuple[int, int] | None) -> float:
    """One optimiser step on this rank's share (`mine`, a mask over the global batch of n) of
    the global batch; this rank's loss."""
    replica, settings = parts.replica, parts.settings
    xb, yb = to_inputs(xb, parts.norm, replica), yb.to(replica.device, non_blocking=True)
    if settings.augment is not None:
        xb = augment_batch(xb, settings.augment, parts.gen, n, mine.to(xb.device), parts.norm, size)
    elif size is not None:
        xb = F.interpolate(xb, size=size, mode="bilinear", antialias=True)
    xb = replica.inputs(xb)
    with replica.autocast(settings.precision == "bf16"):
        loss = replica.batch_loss(parts.loss_fn, parts.step_model(xb), yb, xb, n)
    if settings.l1:
        loss = loss + settings.l1 * l1_penalty(parts.model)
    parts.opt.zero_grad(set_to_none=True)
    loss.backward()
    parts.opt.step()
    return loss.item()


def history_row(epoch: int, train_loss: float, val_loss: float, val_acc: float,
                opt: torch.optim.Optimizer, name: str) -> dict:
    """The epoch's history row, rounded; a training loss gone infinite or NaN stops the run."""
    row = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
           "val_acc": round(val_acc, 6), "lr": opt.param_groups[0]["lr"]}
    if not math.isfinite(row["train_loss"]):
        raise FloatingPointError(f"{name}: loss became {row['train_loss']} at epoch {epoch}; "
                                 "lower the learning rate")
    return row


def track_best(state: FitState, val_loss: float, model: nn.Module, min_delta: float) -> None:
    """Keep the weights of a val_loss gain larger than min_delta; else one more stale epoch."""
    if val_loss < state.best - min_delta:
        state.best, state.best_state, state.stale = val_loss, copy.deepcopy(model.state_dict()), 0
    else:
        state.stale += 1
