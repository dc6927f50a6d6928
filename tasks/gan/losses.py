"""The GAN's losses: hinge losses for D and G, AC-GAN's class loss, and MSGAN's mode seeking."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import GanConfig
from tasks.gan.augment import diff_augment


def class_loss(class_logits: torch.Tensor | None, y: torch.Tensor | None, weight: float):
    """AC-GAN: cross-entropy of the discriminator's class head (0 when unconditional)."""
    if class_logits is None or not weight:
        return 0.0
    return weight * F.cross_entropy(class_logits, y)


def discriminator_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                       fake_y: torch.Tensor | None, cfg: GanConfig,
                       gen: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """Hinge loss on augmented reals and fakes + the class loss on reals.

    Returns (loss, mean D score on reals, on fakes). The class head learns from real images
    only, so fakes cannot teach it their mistakes.
    """
    (real_logits, real_classes) = d.score(diff_augment(real, cfg.augment, gen), y)
    fake_logits, _ = d.score(diff_augment(fake.detach(), cfg.augment, gen), fake_y)
    loss = (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
            + class_loss(real_classes, y, cfg.class_loss_weight))
    return loss, real_logits.mean().item(), fake_logits.mean().item()


def generator_loss(d: nn.Module, fake: torch.Tensor, y: torch.Tensor | None, cfg: GanConfig,
                   gen: torch.Generator) -> torch.Tensor:
    """The hinge generator loss (raise D's score of the fakes) + the requested class's loss."""
    logits, classes = d.score(diff_augment(fake, cfg.augment, gen), y)
    return -logits.mean() + class_loss(classes, y, cfg.class_loss_weight)


def paired(labels: torch.Tensor | None) -> torch.Tensor | None:
    """The batch's labels with the second half repeating the first: fakes i and i + n/2 share one."""
    if labels is None:
        return None
    half = len(labels) // 2
    out = labels.clone()
    out[half:2 * half] = labels[:half]
    return out


def mode_seeking_loss(z: torch.Tensor, fake: torch.Tensor, cfg: GanConfig):
    """MSGAN: penalise fakes i, i + n/2 (same class, other z) for being alike (intra-class collapse)."""
    half = len(z) // 2
    if not cfg.mode_seeking_weight or half == 0:
        return 0.0
    dz = (z[:half] - z[half:2 * half]).abs().mean(1)
    dx = (fake[:half] - fake[half:2 * half]).abs().flatten(1).mean(1)
    return cfg.mode_seeking_weight / ((dx / dz).mean() + 1e-5)
