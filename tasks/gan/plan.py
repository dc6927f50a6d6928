"""The GAN's plan: the auto values (steps, width, batch) this data resolves, the networks'
options, and the generator's card that records them."""

from __future__ import annotations

import math

from evergreen.config import GanConfig
from nets.gan import DISCRIMINATOR, GENERATOR


def gan_plan(cfg: GanConfig, in_shape: tuple[int, ...], n_train: int) -> dict:
    """The auto values resolved for this data: steps, width and batch size.

    steps: `passes` over the train split in batches, within [min_steps, max_steps], so a
    few hundred images still get thousands of generator steps. width: 32 channels at the
    finest map up to 32 px, then halved per doubling of the side (16 at 64 px, 8 at 128 px),
    so the convolutions' multiply-adds (width^2 x side^2) stay level; element-wise work
    still grows with the pixels (on one CPU thread: 0.3 s a step at 32 px, 1.4 s at 128 px).
    """
    batch = min(cfg.batch_size, n_train)
    steps = cfg.steps
    if steps == "auto":
        steps = min(max(math.ceil(cfg.passes * n_train / batch), cfg.min_steps), cfg.max_steps)
    width = cfg.width if cfg.width != "auto" else max(8, min(32, 32 * 32 // in_shape[-1]))
    return {"steps": int(steps), "width": int(width), "batch_size": int(batch)}


def gan_options(cfg: GanConfig, width: int) -> dict:
    """The builder options both networks take (and the card records)."""
    return {"latent_dim": cfg.latent_dim, "width": width, "conditional": cfg.conditional}


def generator_card(in_shape: tuple[int, ...], classes: list[str], cfg: GanConfig,
                   run: dict) -> dict:
    """The generator's card: options, pixel scaling, and the auto values this data resolved."""
    return {"arch": GENERATOR, "options": gan_options(cfg, run["width"]),
            "in_shape": list(in_shape), "classes": classes,
            # the pixel scaling the generator's tanh output maps to (x / 127.5 - 1)
            "mean": [0.5] * in_shape[0], "std": [0.5] * in_shape[0],
            "discriminator": DISCRIMINATOR,
            "training": {"steps": run["step"], "planned_steps": run["steps"],
                         "batch_size": run["batch_size"], "width": run["width"],
                         "seconds": round(run["seconds"], 1), "stopped_by": run["stopped_by"],
                         "seed": cfg.seed, "ema_decay": cfg.ema_decay, "augment": cfg.augment,
                         "class_loss_weight": cfg.class_loss_weight,
                         "balance_classes": cfg.balance_classes}}
