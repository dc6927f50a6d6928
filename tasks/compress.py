"""Compress: knowledge distillation of the teacher into a smaller student.

Each variant is a function returning (model, card, history); pruning and int8 variants
join the VARIANTS dict later.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import AugmentConfig, CompressConfig
from nets import build_model
from tasks.train import FitSettings, LossFn, fit

log = logging.getLogger("evergreen.compress")


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float) -> LossFn:
    """Hinton et al. (2015): alpha * T^2 * KL(soft teacher || soft student) + (1-alpha) * CE."""
    teacher.eval()

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = F.softmax(teacher(x) / temperature, dim=1)
        soft = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft_targets,
                        reduction="batchmean") * temperature**2
        return alpha * soft + (1 - alpha) * F.cross_entropy(logits, y)

    return loss


def student_settings(cfg: CompressConfig) -> FitSettings:
    augment = AugmentConfig() if cfg.augment else None
    return FitSettings(cfg.epochs, cfg.batch_size, cfg.lr, "cosine", l2=cfg.l2, seed=cfg.seed,
                       augment=augment, patience=cfg.epochs)


def distill(teacher: nn.Module, teacher_card: dict, train: tuple[np.ndarray, np.ndarray],
            val: tuple[np.ndarray, np.ndarray], cfg: CompressConfig,
            checkpoint: Path | None = None, checkpoint_key: str = ""):
    """Train the student architecture on the teacher's softened outputs; returns (model, card, history)."""
    in_shape, classes = tuple(teacher_card["in_shape"]), teacher_card["classes"]
    options = {"dropout": cfg.dropout}
    torch.manual_seed(cfg.seed)
    student = build_model(cfg.student, in_shape, len(classes), **options)
    norm = (teacher_card["mean"], teacher_card["std"])
    loss = distillation_loss(teacher, cfg.temperature, cfg.alpha)
    student, history = fit(student, train, val, norm, student_settings(cfg), name="compress",
                           loss_fn=loss, checkpoint=checkpoint, checkpoint_key=checkpoint_key)
    card = {**teacher_card, "arch": cfg.student, "options": options,
            "compression": {"method": "distillation", "teacher_arch": teacher_card["arch"],
                            "temperature": cfg.temperature, "alpha": cfg.alpha}}
    return student, card, history
