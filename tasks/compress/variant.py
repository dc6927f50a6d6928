"""What every compress module shares: a Variant (a model, its card, its history) and the Inputs
every variant builder may use; NotApplicable marks a kind this teacher has none of."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

log = logging.getLogger("evergreen.compress")


Split = tuple[np.ndarray, np.ndarray]


class NotApplicable(Exception):
    """This teacher has no variant of this kind (pruning a network that is not a cnn): the
    variant is skipped with this reason. Any other error is a bug, and is raised."""


@dataclass
class Variant:
    """A compressed (or not) model; int8 ones are PT2E graphs, saved and served as ONNX only."""

    name: str
    model: nn.Module
    card: dict
    history: list[dict] = field(default_factory=list)
    int8: bool = False

    @property
    def method(self) -> str:
        return self.card.get("compression", {}).get("method", "none")


@dataclass
class Inputs:
    """What every variant builder may use."""

    teacher: nn.Module
    card: dict
    train: Split
    val: Split
    checkpoints: Path | None = None  # folder for per-variant epoch checkpoints
    checkpoint_key: str = ""
    prune_why: dict[float, str] = field(default_factory=dict)  # why each ratio (auto: decided)

    def checkpoint(self, name: str) -> Path | None:
        return self.checkpoints / f"compress-{name}.pt" if self.checkpoints else None
