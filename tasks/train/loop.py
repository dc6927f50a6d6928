"""Train: fit a network on the train split with early stopping on the validation loss."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import TrainConfig
from nets.cnn import auto_stem_stride
from tasks.adapt import auto_channels, configured_augment
from tasks.augment import Augment, augment_batch
from tasks.replica import Replica

log = logging.getLogger("evergreen.train")
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitSettings:
    """What the loop needs, whichever stage (train, compress) runs it."""

    epochs: int
    batch_size: int
    lr: float
    lr_schedule: str = "cosine"
    l1: float = 0.0
    l2: float = 0.0
    seed: int = 0
    augment: Augment | None = None
    patience: int | None = None  # epochs without a val_loss gain before stopping; None: never
    min_delta: float = 0.0
    threads: int = 0
    max_seconds: float | None = None  # after epoch 1, the schedule shrinks to what fits
    precision: str = "fp32"  # or bf16: autocast (tasks.adapt.resolve_precision)
    early_scale: float = 1.0  # progressive resizing: the first epochs' side, a share of the full
    early_share: float = 0.0  # share of the epochs at that side

    def input_size(self, epoch: int, epochs: int, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """The (h, w) this epoch trains at when progressive resizing shrinks it, else None."""
        if self.early_scale >= 1.0 or epoch > round(self.early_share * epochs):
            return None
        return tuple(max(1, round(side * self.early_scale)) for side in shape[-2:])

    @classmethod
    def from_train(cls, cfg: TrainConfig, augment: Augment | None | str = "configured"
                   ) -> FitSettings:
        """Settings of a TrainConfig whose epochs are a number (tasks.adapt.resolve_train
        resolves auto), with `augment`, or by default the one params give without data. A
        precision left auto (tasks.adapt.resolve_precision decides it) trains in fp32."""
        if cfg.epochs == "auto":
            raise ValueError("train.epochs is auto: resolve it from the data first "
                             "(tasks.adapt.resolve_train)")
        if augment == "configured":
            augment = configured_augment(cfg.augment)
        minutes, progressive = cfg.budget.minutes, cfg.progressive
        return cls(int(cfg.epochs), cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.l1, cfg.l2,
                   cfg.seed, augment, cfg.early_stopping.patience, cfg.early_stopping.min_delta,
                   cfg.threads, minutes * 60 if minutes else None,
                   "fp32" if cfg.precision == "auto" else cfg.precision,
                   1.0 if progressive.scale == "auto" else progressive.scale, progressive.share)


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] then standardized per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (not biases or norm scales)."""
    return sum(p.abs().sum() for n, p in model.named_parameters() if p.dim() > 1)


def make_scheduler(opt: torch.optim.Optimizer, settings: FitSettings):
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


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512):
    """Mean cross-entropy and accuracy of `model` on normalized inputs."""
    model.eval()
    logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def val_loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                          replica: Replica) -> tuple[float, float]:
    """Validation loss and accuracy; a DDP rank holds a slice of val, so sum over ranks."""
    if replica.world == 1:
        return evaluate_loss(model, x, y)
    loss, acc = evaluate_loss(model, x, y) if len(x) else (0.0, 0.0)
    loss_sum, correct, n = replica.sum([loss * len(x), acc * len(x), float(len(x))])
    return loss_sum / n, correct / n


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


class Progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, name: str, total: int):
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=True)
            self.task = self.bar.add_task(name, total=total)
            self.bar.start()

    def advance(self, description: str) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, description=description)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also when an on_epoch hook raises (a pruned trial), or rich keeps drawing


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path | None, key: str) -> dict | None:
    """The last epoch checkpoint of this very run (same key), loaded as plain tensors only."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # weights_only refuses pickled code; a torn file fails too
        log.warning("%s: not a plain-tensor checkpoint, refused (not unpickled); starting this "
                    "run from scratch: %s", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def uses_conv(model: nn.Module) -> bool:
    """Whether channels_last pays: it does for conv nets on this CPU too (oneDNN's native
    layout; the default teacher trains 1.15-1.3x faster), so fit trains them that way."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        norm: tuple[list[float], list[float]], settings: FitSettings, *, name: str = "train",
        loss_fn: LossFn = cross_entropy_loss, checkpoint: Path | None = None,
        checkpoint_key: str = "", replica: Replica | None = None,
        on_epoch: Callable[[dict, int], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Mini-batch training on in-memory tensors; returns the best model and per-epoch history.

    With the `replica` of a DDP worker (tasks.distributed), settings.batch_size is the global
    batch: each rank steps on its slice, validates on its slice of val, and the leader alone
    writes the checkpoint; the updates are those of one process with the same batch.
    """
    replica = replica or Replica()
    if not replica.channels_last and uses_conv(model):
        replica = dataclasses.replace(replica, channels_last=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    x_train = replica.to_device(normalize(torch.from_numpy(train[0]), *norm))
    y_train = replica.to_device(torch.from_numpy(train[1]))
    mine = replica.part(len(val[0]))
    x_val = replica.to_device(normalize(torch.from_numpy(val[0][mine]), *norm))
    y_val = replica.to_device(torch.from_numpy(val[1][mine]))
    model = replica.prepare(model)
    step_model = replica.wrap(model)  # DDP when distributed; the same module otherwise
    # fused: one kernel per step over all parameters instead of a dozen per-tensor ops
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.l2,
                            fused=next(model.parameters()).device.type in ("cpu", "cuda"))
    sched = make_scheduler(opt, settings)
    history, best, best_state, stale, start = [], math.inf, copy.deepcopy(model.state_dict()), 0, 1

    resumed = replica.share(load_checkpoint(checkpoint, checkpoint_key) if replica.leader else None)
    if resumed:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optim"])
        sched.load_state_dict(resumed["sched"])
        gen.set_state(resumed["gen"])
        torch.set_rng_state(resumed["rng"])
        history, best, best_state, stale = (resumed["history"], resumed["best"],
                                            resumed["best_state"], resumed["stale"])
        start = resumed["epoch"] + 1
        log.info("%s: resumed from epoch %d", name, resumed["epoch"])

    patience = math.inf if settings.patience is None else settings.patience
    if stale >= patience:  # the checkpointed run had already stopped early
        start = settings.epochs + 1
    epochs, began = settings.epochs, time.perf_counter()
    with Progress(name, settings.epochs) as progress:
        for epoch in range(start, settings.epochs + 1):
            if epoch > epochs:
                break
            replica.seed_epoch(settings.seed, epoch)
            size = settings.input_size(epoch, epochs, x_train.shape)
            step_model.train()
            order = torch.randperm(len(x_train), generator=gen)  # the same on every rank
            total, seen = 0.0, 0
            for i in range(0, len(order), settings.batch_size):
                idx = order[i:i + settings.batch_size]
                part = replica.part(len(idx))
                xb, yb = x_train[idx[part]], y_train[idx[part]]
                if settings.augment is not None:
                    xb = augment_batch(xb, settings.augment, gen, len(idx), part, norm, size)
                elif size is not None:
                    xb = F.interpolate(xb, size=size, mode="bilinear", antialias=True)
                xb = replica.inputs(xb)
                with replica.autocast(settings.precision == "bf16"):
                    loss = replica.batch_loss(loss_fn, step_model(xb), yb, xb, len(idx))
                if settings.l1:
                    loss = loss + settings.l1 * l1_penalty(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # summed over ranks, the shares add up to the global batch's loss x len(idx)
                total, seen = total + loss.item() * len(idx) / replica.world, seen + len(idx)
            sched.step()
            total = replica.sum([total])[0]
            val_loss, val_acc = val_loss_and_accuracy(model, x_val, y_val, replica)
            row = {"epoch": epoch, "train_loss": round(total / seen, 6), "val_loss": round(val_loss, 6),
                   "val_acc": round(val_acc, 6), "lr": opt.param_groups[0]["lr"]}
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"{name}: loss became {row['train_loss']} at epoch {epoch}; "
                                         "lower the learning rate")
            history.append(row)
            if settings.max_seconds and epoch == start:
                seconds = replica.sum([time.perf_counter() - began])[0] / replica.world  # ranks agree
                if size is not None:  # a full-size epoch costs about the pixel ratio more
                    seconds /= settings.early_scale ** 2
                epochs = fit_in_time(sched, settings, epoch, seconds, name)
            if on_epoch is not None and replica.leader:
                on_epoch(row, epochs)  # e.g. the flow's progress artifact (epochs after any time cap)
            log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_acc=%.4f", epoch, settings.epochs,
                     row["train_loss"], val_loss, val_acc)
            progress.advance(f"{name} epoch {epoch} val_acc={val_acc:.3f}")
            if val_loss < best - settings.min_delta:
                best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
            if checkpoint is not None and replica.leader:
                save_checkpoint(checkpoint, {
                    "key": checkpoint_key, "epoch": epoch, "model": model.state_dict(),
                    "optim": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                    "rng": torch.get_rng_state(), "history": history, "best": best,
                    "best_state": best_state, "stale": stale})
            if stale >= patience:
                log.info("%s: early stop at epoch %d (no val_loss gain for %d epochs)",
                         name, epoch, stale)
                break
    model.load_state_dict(best_state)
    return model.to(memory_format=torch.contiguous_format).eval(), history


def model_options(cfg: TrainConfig, in_shape: tuple[int, ...]) -> dict:
    """The builder options for the configured architecture and these inputs, all resolved (the
    card records them, so the network rebuilds the same whatever the defaults become)."""
    options = {"dropout": cfg.dropout}
    if cfg.model == "cnn":
        options["stem_stride"] = cfg.cnn.stem_stride or auto_stem_stride(in_shape)
        options["channels"] = auto_channels(cfg, in_shape, options["stem_stride"])[0]
    elif cfg.model == "vit":
        options.update(cfg.vit.model_dump())
    return options
