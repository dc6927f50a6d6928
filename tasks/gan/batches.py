"""What the training loop draws from the train split: real batches (class-balanced or not),
and the labels the averaged generator's BatchNorm statistics are re-estimated on."""

from __future__ import annotations

import numpy as np
import torch

from evergreen.config import GanConfig
from tasks.gan.samples import to_unit


def real_batch(x, y: torch.Tensor, size: int, cfg: GanConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random batch of uint8 images (an array, or tasks.data.Images read from the shards) in
    the generator's [-1, 1] (a function of the RNG alone, so a resume continues it): without
    repeats, or, conditional with gan.balance_classes, classes drawn uniformly and then an
    image of each."""
    if cfg.conditional and cfg.balance_classes:
        idx = balanced_indices(y, size, gen)
    else:
        idx = torch.randperm(len(y), generator=gen)[:size]
    real = to_unit(np.asarray(x[idx.numpy()]))
    return real, (y[idx] if cfg.conditional else None)


def balanced_indices(y: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """`size` indices into y whose classes are uniform over those present: the fakes take the
    reals' labels, so a class with a tenth of the images (GTSRB: 210 against 2,250) still gets
    its share of generator steps, as the gates ask every class for the same share."""
    order = torch.argsort(y, stable=True)  # indices grouped by class
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    present = torch.nonzero(counts).flatten()
    cls = present[torch.randint(0, len(present), (size,), generator=gen)]
    within = (torch.rand(size, generator=gen) * counts[cls]).long().clamp_max(counts[cls] - 1)
    return order[starts[cls] + within]


def batchnorm_labels(y: torch.Tensor, cfg: GanConfig) -> torch.Tensor | None:
    """The labels the EMA generator's BatchNorm statistics are re-estimated on: as training drew
    them (uniform over the classes present when balanced, else the train split's own)."""
    if not cfg.conditional:
        return None
    return torch.unique(y) if cfg.balance_classes else y
