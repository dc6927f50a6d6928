"""The fit loop's losses: the training loss, the L1 penalty, and the validation loss and accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nets.memory import release_free_memory
from tasks.train.replica import Replica

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
    """The default LossFn: cross-entropy (the inputs are for losses such as distillation's)."""
    return F.cross_entropy(logits, y)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (not biases or norm scales)."""
    return sum(p.abs().sum() for n, p in model.named_parameters() if p.dim() > 1)


@torch.no_grad()
def evaluate_loss(model: nn.Module, x, y: torch.Tensor, batch: int = 512):
    """Mean cross-entropy and accuracy of `model` on inputs walked block by block
    (tasks.train.feed.Inputs: read and normalized as they go)."""
    model.eval()
    loss, correct, at = 0.0, 0.0, 0
    for xb in x.blocks(batch):
        logits, yb = model(xb), y[at:at + len(xb)]
        loss += F.cross_entropy(logits.float(), yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
        at += len(xb)
        release_free_memory()
    return loss / max(at, 1), correct / max(at, 1)


def val_loss_and_accuracy(model: nn.Module, x, y: torch.Tensor,
                          replica: Replica) -> tuple[float, float]:
    """Validation loss and accuracy; a DDP rank holds a slice of val, so sum over ranks."""
    if replica.world == 1:
        return evaluate_loss(model, x, y)
    loss, acc = evaluate_loss(model, x, y) if len(x) else (0.0, 0.0)
    loss_sum, correct, n = replica.sum([loss * len(x), acc * len(x), float(len(x))])
    return loss_sum / n, correct / n
