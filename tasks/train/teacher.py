"""Train the teacher: resolve the auto defaults from the data, build the configured network for
its shape, and fit it in this process or in DDP workers (tasks.train.launcher)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evergreen.config import TrainConfig
from tasks.train.adapt import resolve_precision, resolve_train
from tasks.train.loop import fit
from tasks.train.model import build_teacher, teacher_card
from tasks.train.replica import resolve_backend
from tasks.train.settings import FitSettings

log = logging.getLogger("evergreen.train")


def train_model(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                classes: list[str], norm: tuple[list[float], list[float]], cfg: TrainConfig,
                checkpoint: Path | None = None, checkpoint_key: str = "",
                on_epoch: Callable[[dict, int], None] | None = None, root: Path | None = None):
    """Resolve the auto defaults from the data, build the configured network for its shape and
    fit it; returns (model, card, history). The card records every auto decision.

    With train.distributed.world_size > 1 (or backend nccl: the GPU path) the elastic
    launcher runs the fit in DDP workers, each reading the data under `root` (the workspace).
    `on_epoch(row, epochs)` follows an in-process fit (DDP workers are other processes; they
    log each epoch).
    """
    cfg, augment, decided = resolve_train(cfg, train, classes)
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    model, options = build_teacher(cfg, in_shape, len(classes), cfg.seed)
    distributed = cfg.distributed.world_size > 1 or cfg.distributed.backend == "nccl"
    gpu = distributed and resolve_backend(cfg.distributed.backend) == "nccl"
    precision, decided["precision_why"] = resolve_precision(cfg.precision, model, in_shape, gpu)
    cfg, decided["precision"] = cfg.model_copy(update={"precision": precision}), precision
    log.info("train: %s (%s), %d epochs (%s), augmentation %s, sizes %s, %s (%s)",
             decided["kind"], decided["kind_why"], cfg.epochs, decided["epochs_why"],
             describe_augment(decided["augment"]), decided["progressive"]["why"], precision,
             decided["precision_why"])
    if distributed:
        from tasks.train.launcher import launch  # starts torchrun: imported only for a DDP run

        model, card, history = launch(train, val, classes, norm, cfg, augment, checkpoint,
                                      checkpoint_key, root)
        return model, {**card, "auto": decided}, history
    model, history = fit(model, train, val, norm, FitSettings.from_train(cfg, augment),
                         checkpoint=checkpoint, checkpoint_key=checkpoint_key, on_epoch=on_epoch)
    return model, {**teacher_card(cfg, options, in_shape, classes, norm, 1), "auto": decided}, history


def describe_augment(record: dict) -> str:
    """The augmentation decision in a few words, for the log line."""
    if not record.get("enabled", True):
        return "off"
    return f"{record['preset']} (hflip {record['hflip_why']})"
