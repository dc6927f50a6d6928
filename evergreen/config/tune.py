"""The tune section: the Optuna study `evergreen tune` runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from evergreen.config.section import Section


class TuneConfig(Section):
    """`evergreen tune`: an Optuna study over train params, kept in the workspace."""

    trials: int = Field(12, ge=1, le=10_000)
    timeout_s: float | None = Field(900.0, gt=0.0, description="stop starting trials after this")
    pruner: Literal["median", "halving", "none"] = Field(
        "median", description="median: MedianPruner; halving: SuccessiveHalvingPruner")
    seed: int = 0
    epochs: int | None = Field(None, ge=1, description="epochs per trial (null: train's)")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "train.lr": {"low": 0.0003, "high": 0.01, "log": True},
            "train.l2": {"low": 0.00001, "high": 0.005, "log": True},
            "train.dropout": {"low": 0.0, "high": 0.4},
            "train.batch_size": {"choices": [32, 64, 128]},
        },
        description="param path -> {low, high[, log, step]} (float or int) or {choices: [...]}")
