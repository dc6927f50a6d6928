"""Compress stage: distillation trains the student from the teacher's soft targets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evergreen.config import CompressConfig, TrainConfig
from nets import build_model
from nets.cnn import SeedCNN
from nets.inputs import normalize
from tasks.compress import distill, distillation_loss
from tasks.train import train_model
from tests.conftest import TINY_PARAMS


class Fixed(nn.Module):
    """A 'teacher' that answers every input with the same logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_distill_trains_a_seed_cnn_student(data):
    train, val, classes, norm = data
    cfg = TrainConfig.model_validate({**TINY_PARAMS["train"], "epochs": 1})
    teacher, teacher_card, _ = train_model(train, val, classes, norm, cfg)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ccfg = CompressConfig.model_validate({**TINY_PARAMS["compress"], "epochs": 2})

    student, card, history = distill(teacher, teacher_card, train, val, ccfg)

    assert isinstance(student, SeedCNN) and not student.training
    assert card["arch"] == "seed_cnn"
    assert card["compression"]["method"] == "distillation"
    assert card["compression"]["teacher_arch"] == "cnn"
    assert (card["classes"], card["mean"], card["in_shape"]) == (
        teacher_card["classes"], teacher_card["mean"], teacher_card["in_shape"])
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
               for row in history)
    with torch.no_grad():
        out = student(normalize(torch.from_numpy(val[0]), *norm))
    assert out.shape == (len(val[0]), len(classes)) and torch.isfinite(out).all()
    after = teacher.state_dict()  # the teacher only teaches
    assert all(torch.equal(after[k], before[k]) for k in before)


def batch(n=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    logits = torch.randn(n, classes, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return logits, y, x


def test_soft_loss_depends_on_the_teacher():
    logits, y, x = batch()
    torch.manual_seed(1)
    one = build_model("seed_cnn", (1, 8, 8), 10)
    torch.manual_seed(2)
    two = build_model("seed_cnn", (1, 8, 8), 10)

    a = distillation_loss(one, temperature=4.0, alpha=1.0)(logits, y, x)
    b = distillation_loss(two, temperature=4.0, alpha=1.0)(logits, y, x)

    assert torch.isfinite(a) and torch.isfinite(b)
    assert not torch.isclose(a, b)


def test_soft_loss_is_zero_when_the_student_matches_the_teacher():
    logits, y, x = batch()
    loss = distillation_loss(Fixed(logits), temperature=3.0, alpha=1.0)(logits, y, x)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_plain_cross_entropy():
    logits, y, x = batch()
    teacher = Fixed(torch.randn_like(logits))
    loss = distillation_loss(teacher, temperature=4.0, alpha=0.0)(logits, y, x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))


def test_loss_mixes_soft_and_hard_by_alpha():
    logits, y, x = batch()
    teacher = Fixed(torch.randn_like(logits))
    soft = distillation_loss(teacher, 2.0, 1.0)(logits, y, x)
    hard = distillation_loss(teacher, 2.0, 0.0)(logits, y, x)
    mixed = distillation_loss(teacher, 2.0, 0.3)(logits, y, x)
    torch.testing.assert_close(mixed, 0.3 * soft + 0.7 * hard)


def test_loss_gives_the_student_gradients_but_not_the_teacher():
    torch.manual_seed(0)
    teacher = build_model("seed_cnn", (1, 8, 8), 10)
    _, y, x = batch()
    logits = torch.randn(len(x), 10, requires_grad=True)
    distillation_loss(teacher, 4.0, 0.5)(logits, y, x).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("auto, epochs", [
    ({"epochs": 15, "budget_epochs": 15}, 15),  # a large set: the teacher's samples
    ({"epochs": 40, "budget_epochs": 318}, 60),  # cut short by max_epochs: 1.5x
    ({"epochs": 40, "budget_epochs": 57}, 57),
    ({"epochs": 10, "budget_epochs": 4}, 10),  # min_epochs raised the teacher: as many
    ({"epochs": 12}, 18),  # epochs set by hand: 1.5x
])
def test_a_student_sees_the_teacher_budget_within_1x_and_1_5x_its_epochs(auto, epochs):
    from tasks.compress import student_epochs

    assert student_epochs(CompressConfig(), {"auto": auto}) == epochs
    assert student_epochs(CompressConfig(epochs=7), {"auto": auto}) == 7


def test_students_and_fine_tunes_train_in_the_teacher_precision():
    from tasks.compress import student_settings

    assert student_settings(CompressConfig(), {"auto": {"epochs": 4, "precision": "bf16"}}
                            ).precision == "bf16"
    assert student_settings(CompressConfig(), {}).precision == "fp32"
