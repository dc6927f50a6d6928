"""Train the GAN: D and G steps on real batches, the generator's EMA, checkpoints and resume."""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evergreen.config import GanConfig
from nets.gan import build_discriminator, build_generator
from tasks.gan.batches import batchnorm_labels, real_batch
from tasks.gan.ema import ema_update, recalibrate_batchnorm
from tasks.gan.losses import discriminator_loss, generator_loss, mode_seeking_loss, paired
from tasks.gan.plan import gan_options, gan_plan, generator_card
from tasks.train.checkpoint import load_checkpoint, save_checkpoint
from tasks.train.progress import Progress

log = logging.getLogger("evergreen.gan")
CHECKPOINTED = ("g", "d", "ema", "opt_g", "opt_d")
STATE = {"history": [], "step": 0, "seconds": 0.0, "stopped_by": None}


def train_gan(train: tuple[np.ndarray, np.ndarray], classes: list[str], cfg: GanConfig,
              checkpoint: Path | None = None, checkpoint_key: str = "", every: int = 100,
              clock=time.perf_counter):
    """Fit the GAN on the train split for its step budget; returns (EMA generator, card, history).

    Fixed seed; a history row and a checkpoint every `every` steps, resumed when its key
    matches this run. gan.minutes stops at the first row past the wall-clock cap.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    plan = gan_plan(cfg, in_shape, len(train[0]))
    parts = build_parts(in_shape, len(classes), cfg, plan["width"])
    x, y = train[0], torch.from_numpy(train[1]).long()
    state = resume(parts, gen, checkpoint, checkpoint_key)
    began = clock() - state["seconds"]
    progress = Progress("gan", math.ceil(plan["steps"] / every))
    while state["step"] < plan["steps"] and state["stopped_by"] is None:
        chunk = min(every, plan["steps"] - state["step"])
        sums = sum(train_step(parts, *real_batch(x, y, plan["batch_size"], cfg, gen), cfg, gen,
                              state["step"] + k) for k in range(chunk))
        state["step"] += chunk
        state["seconds"] = clock() - began
        if cfg.minutes is not None and state["seconds"] >= cfg.minutes * 60:
            state["stopped_by"] = "minutes"
        log_row(state, plan, (sums / chunk).round(6).tolist(), progress)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"key": checkpoint_key, **state, "gen": gen.get_state(),
                                         "rng": torch.get_rng_state(),
                                         **{k: parts[k].state_dict() for k in CHECKPOINTED}})
    progress.close()
    g = recalibrate_batchnorm(parts["ema"], batchnorm_labels(y, cfg),
                              torch.Generator().manual_seed(cfg.seed))
    return g, generator_card(in_shape, classes, cfg, {**plan, **state}), state["history"]


def build_parts(in_shape: tuple[int, ...], n_classes: int, cfg: GanConfig, width: int) -> dict:
    """Generator, discriminator, the generator's EMA and both optimisers."""
    g = build_generator(in_shape, n_classes, **gan_options(cfg, width))
    d = build_discriminator(in_shape, n_classes, **gan_options(cfg, width))
    return {"g": g, "d": d, "ema": copy.deepcopy(g), "opt_g": adam(g, cfg), "opt_d": adam(d, cfg)}


def adam(model: nn.Module, cfg: GanConfig) -> torch.optim.Adam:
    """Adam with gan.lr and gan.beta1 (a low beta1 steadies the adversarial game)."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))


def resume(parts: dict, gen: torch.Generator, checkpoint: Path | None, key: str) -> dict:
    """The training state: the checkpoint's when its key matches (parts and RNGs restored)."""
    resumed = load_checkpoint(checkpoint, key)
    if not resumed:
        return copy.deepcopy(STATE)
    for name in CHECKPOINTED:
        parts[name].load_state_dict(resumed[name])
    gen.set_state(resumed["gen"])
    torch.set_rng_state(resumed["rng"])
    log.info("gan: resumed from step %d", resumed["step"])
    return {k: resumed[k] for k in STATE}


def train_step(parts: dict, real: torch.Tensor, labels: torch.Tensor | None, cfg: GanConfig,
               gen: torch.Generator, step: int) -> np.ndarray:
    """One discriminator step, one generator step, the EMA: [d_loss, g_loss, D(real), D(fake)]."""
    g, d = parts["g"], parts["d"]
    z, fake_labels = torch.randn(len(real), cfg.latent_dim, generator=gen), paired(labels)
    fake = g(z, fake_labels)
    d_loss, d_real, d_fake = discriminator_loss(d, real, fake, labels, fake_labels, cfg, gen)
    parts["opt_d"].zero_grad(set_to_none=True)
    d_loss.backward()
    parts["opt_d"].step()
    g_loss = generator_loss(d, fake, fake_labels, cfg, gen) + mode_seeking_loss(z, fake, cfg)
    parts["opt_g"].zero_grad(set_to_none=True)
    g_loss.backward()
    parts["opt_g"].step()
    ema_update(parts["ema"], g, cfg.ema_decay, step)
    return np.array([d_loss.item(), g_loss.item(), d_real, d_fake])


def log_row(state: dict, plan: dict, means: list[float], progress) -> None:
    """Refuse a diverged stretch, else append its means to the history, the log and the bar."""
    step = state["step"]
    row = {"step": step, **dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), means, strict=True))}
    if not all(math.isfinite(v) for v in row.values()):
        raise FloatingPointError(f"gan: loss became {row} at step {step}; lower gan.lr")
    state["history"].append(row)
    log.info("gan step %d/%d d_loss=%.4f g_loss=%.4f D(real)=%.3f D(fake)=%.3f (%.0f s)", step,
             plan["steps"], row["d_loss"], row["g_loss"], row["d_real"], row["d_fake"],
             state["seconds"])
    progress.advance(f"gan step {step} d_loss={row['d_loss']:.3f} g_loss={row['g_loss']:.3f}")
