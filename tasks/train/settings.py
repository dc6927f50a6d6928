"""What the fit loop needs, whichever stage (train, compress) runs it: FitSettings."""

from __future__ import annotations

from dataclasses import dataclass

from evergreen.config import TrainConfig
from tasks.train.adapt import configured_augment
from tasks.train.augment import Augment


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
    precision: str = "fp32"  # or bf16: autocast (tasks.train.adapt.resolve_precision)
    early_scale: float = 1.0  # progressive resizing: the first epochs' side, a share of the full
    early_share: float = 0.0  # share of the epochs at that side
    shuffle_window: int = 8192  # samples shuffled together (tasks.data.sampler)
    streams: int | None = None  # parts of the order read side by side (None: one per rank)
    loader_workers: int = 0  # DataLoader worker processes reading batches
    checkpoint_every_s: float | None = None  # a checkpoint inside an epoch this often

    def input_size(self, epoch: int, epochs: int, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """The (h, w) this epoch trains at when progressive resizing shrinks it, else None."""
        if self.early_scale >= 1.0 or epoch > round(self.early_share * epochs):
            return None
        return tuple(max(1, round(side * self.early_scale)) for side in shape[-2:])

    @classmethod
    def from_train(cls, cfg: TrainConfig, augment: Augment | None | str = "configured"
                   ) -> FitSettings:
        """Settings of a TrainConfig whose epochs are a number (tasks.train.adapt.resolve_train
        resolves auto), with `augment`, or by default the one params give without data. A
        precision left auto (tasks.train.adapt.resolve_precision decides it) trains in fp32."""
        if cfg.epochs == "auto":
            raise ValueError("train.epochs is auto: resolve it from the data first "
                             "(tasks.train.adapt.resolve_train)")
        if augment == "configured":
            augment = configured_augment(cfg.augment)
        from tasks.train.feed import loader_workers

        minutes, progressive, feed = cfg.budget.minutes, cfg.progressive, cfg.feed
        return cls(int(cfg.epochs), cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.l1, cfg.l2,
                   cfg.seed, augment, cfg.early_stopping.patience, cfg.early_stopping.min_delta,
                   cfg.threads, minutes * 60 if minutes else None,
                   "fp32" if cfg.precision == "auto" else cfg.precision,
                   1.0 if progressive.scale == "auto" else progressive.scale, progressive.share,
                   feed.shuffle_window, None if feed.streams == "auto" else feed.streams,
                   loader_workers(feed.loader_workers),
                   feed.checkpoint_every_s)
