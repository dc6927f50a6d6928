"""Students: the auto student architecture (never larger than its teacher) and its training,
with distillation from the teacher's softened outputs (Hinton et al.) or without (the control)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import CompressConfig
from nets import build_model
from tasks.compress.variant import Split
from tasks.train import FitSettings, LossFn, cross_entropy_loss, fit
from tasks.train.adapt import settings_augment
from tasks.train.augment import PRESETS, Augment


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


def teacher_augment(cfg: CompressConfig, teacher_card: dict) -> Augment | None:
    """Students and fine-tunes train on the warps their teacher trained on (its card's record;
    the characters preset for a card from before auto defaults), or none with augment off."""
    if not cfg.augment:
        return None
    recorded = teacher_card.get("auto", {}).get("augment")
    return settings_augment(recorded) if recorded else PRESETS["characters"]


def student_epochs(cfg: CompressConfig, teacher_card: dict) -> int:
    """compress.epochs, or for auto the epochs the teacher's sample budget asked for, at least
    the teacher's and at most 1.5x them. A student on a large set sees the teacher's samples
    (GTSRB: 15 epochs of 27k images); where max_epochs cut the teacher short, it gets 1.5x (the
    digits: 40 of 318 asked; 40 left the distilled seed_cnn one validation image outside
    max_accuracy_drop, 60 kept it inside). A card without the record (epochs set): 1.5x."""
    if cfg.epochs != "auto":
        return int(cfg.epochs)
    auto = teacher_card.get("auto", {})
    teacher = int(auto.get("epochs", 40))
    return min(math.ceil(1.5 * teacher), max(teacher, int(auto.get("budget_epochs", 2 * teacher))))


def teacher_precision(teacher_card: dict) -> str:
    """Students and fine-tunes run the teacher's forward pass every step: its precision."""
    return teacher_card.get("auto", {}).get("precision", "fp32")


def student_settings(cfg: CompressConfig, teacher_card: dict) -> FitSettings:
    epochs = student_epochs(cfg, teacher_card)
    return FitSettings(epochs, cfg.batch_size, cfg.lr, "cosine", l2=cfg.l2, seed=cfg.seed,
                       augment=teacher_augment(cfg, teacher_card), patience=epochs,
                       precision=teacher_precision(teacher_card))


def train_student(teacher: nn.Module, teacher_card: dict, train: Split, val: Split,
                  cfg: CompressConfig, distilled: bool = True, checkpoint: Path | None = None,
                  checkpoint_key: str = ""):
    """The student architecture, from the teacher's soft targets or (control) the labels only.

    Both use the same seed, epochs and optimizer, so the difference is the distillation.
    Returns (model, card, history).
    """
    in_shape, classes = tuple(teacher_card["in_shape"]), teacher_card["classes"]
    arch, options = student_arch(cfg.student, teacher_card)
    options["dropout"] = cfg.dropout
    torch.manual_seed(cfg.seed)
    student = build_model(arch, in_shape, len(classes), **options)
    norm = (teacher_card["mean"], teacher_card["std"])
    loss = distillation_loss(teacher, cfg.temperature, cfg.alpha) if distilled else cross_entropy_loss
    student, history = fit(student, train, val, norm, student_settings(cfg, teacher_card),
                           name="compress",
                           loss_fn=loss, checkpoint=checkpoint, checkpoint_key=checkpoint_key)
    method = ({"method": "distillation", "teacher_arch": teacher_card["arch"],
               "temperature": cfg.temperature, "alpha": cfg.alpha} if distilled
              else {"method": "student_without_distillation", "role": "control"})
    inherited = {k: v for k, v in teacher_card.items() if k != "training"}  # not how it trained
    card = {**inherited, "arch": arch, "options": options,
            "compression": {**method, "student": cfg.student}}
    return student, card, history


SEED_CNN_MAX_SIDE = 16  # above it, the seed network's Flatten->Dense outgrows the teacher


def student_arch(choice: str, teacher_card: dict) -> tuple[str, dict]:
    """(architecture, options) of the student: `choice`, or for auto the seed's network on
    inputs up to 16 px and, above them, the teacher's architecture at 3/8 of its width (about
    a seventh of its weights and compute: half width measured 0.26 of the size and 2.5x the
    speed on 28x28, just outside the default budget), so it is never larger than its teacher."""
    if choice != "auto":
        return choice, {}
    if max(teacher_card["in_shape"][1:]) <= SEED_CNN_MAX_SIDE or teacher_card["arch"] == "seed_cnn":
        return "seed_cnn", {}
    options = dict(teacher_card.get("options", {}))
    if teacher_card["arch"] == "cnn":
        options["channels"] = [max(4, round(c * 3 / 8)) for c in options.get("channels", [32, 64, 128])]
    elif teacher_card["arch"] == "vit":
        options["dim"] = max(8, round(options.get("dim", 64) * 3 / 8 / 4) * 4)
        options["heads"] = max(1, min(options.get("heads", 4), options["dim"] // 8))
    options.pop("dropout", None)
    return teacher_card["arch"], options


def distill(teacher: nn.Module, teacher_card: dict, train: Split, val: Split, cfg: CompressConfig,
            checkpoint: Path | None = None, checkpoint_key: str = ""):
    """Train the student architecture on the teacher's softened outputs; returns (model, card, history)."""
    return train_student(teacher, teacher_card, train, val, cfg, True, checkpoint, checkpoint_key)
