"""The teacher network and its card: one place for how a run builds what it trains."""

from __future__ import annotations

from torch import nn

from evergreen.config import TrainConfig
from nets import build_model
from tasks.train.adapt import model_options


def build_teacher(cfg: TrainConfig, in_shape: tuple[int, ...], n_classes: int,
                  seed: int | None = None) -> tuple[nn.Module, dict]:
    """The configured network for this input shape and its options (seeded first when given)."""
    import torch

    options = model_options(cfg, in_shape)
    if seed is not None:
        torch.manual_seed(seed)
    return build_model(cfg.model, in_shape, n_classes, **options), options


def teacher_card(cfg: TrainConfig, options: dict, in_shape: tuple[int, ...], classes: list[str],
                 norm: tuple[list[float], list[float]], world_size: int) -> dict:
    """What nets.io saves beside the weights: how to rebuild, normalize and name the outputs."""
    return {"arch": cfg.model, "options": options, "in_shape": list(in_shape), "classes": classes,
            "mean": norm[0], "std": norm[1], "training": {"world_size": world_size}}
