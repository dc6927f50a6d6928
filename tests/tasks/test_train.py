"""Train stage: the fit loop, augmentation, early stopping, L1, checkpoint and resume."""

import logging
import math

import numpy as np
import pytest
import torch

import tasks.train.checkpoint as checkpoint_mod
import tasks.train.losses as losses_mod
from evergreen.config import TrainConfig
from nets import build_model
from nets.inputs import normalize
from tasks.train import FitSettings, fit, train_model
from tasks.train.augment import Augment, augment_batch
from tasks.train.losses import l1_penalty
from tests.conftest import TINY_PARAMS

HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "lr"}



def small_cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", (1, 8, 8), 10, **TINY_PARAMS["train"]["cnn"])


def settings(**overrides):
    base = dict(epochs=2, batch_size=32, lr=3e-3, augment=Augment())
    return FitSettings(**{**base, **overrides})


def test_fit_two_epochs_gives_finite_history(data):
    train, val, _, norm = data
    model, history = fit(small_cnn(), train, val, norm, settings())

    assert [row["epoch"] for row in history] == [1, 2]
    assert all(set(row) == HISTORY_KEYS for row in history)
    assert all(math.isfinite(row[k]) for row in history for k in HISTORY_KEYS)
    assert all(0.0 <= row["val_acc"] <= 1.0 for row in history)
    assert not model.training


def test_fit_in_bf16_learns_with_fp32_weights(data, monkeypatch):
    train, val, _, norm = data
    casts = []
    autocast = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: casts.append(k["dtype"]) or autocast(*a, **k))

    model, history = fit(small_cnn(), train, val, norm, settings(epochs=3, precision="bf16"))

    assert casts and set(casts) == {torch.bfloat16}
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert history[-1]["val_acc"] > 0.3  # chance is 0.1
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_fit_is_deterministic_for_a_seed(data):
    train, val, _, norm = data
    _, first = fit(small_cnn(), train, val, norm, settings())
    _, again = fit(small_cnn(), train, val, norm, settings())
    assert first == again


def test_train_model_returns_a_card_for_the_data(data):
    train, val, classes, norm = data
    cfg = TrainConfig.model_validate({**TINY_PARAMS["train"], "epochs": 2})
    model, card, history = train_model(train, val, classes, norm, cfg)

    assert len(history) == cfg.epochs
    assert card["arch"] == "cnn" and card["in_shape"] == [1, 8, 8]
    assert card["classes"] == classes and (card["mean"], card["std"]) == norm
    assert card["options"]["channels"] == TINY_PARAMS["train"]["cnn"]["channels"]
    with torch.no_grad():
        assert model(normalize(torch.from_numpy(val[0]), *norm)).shape == (len(val[0]), 10)


# --- augmentation ---------------------------------------------------------------------

def test_augment_keeps_shape_changes_pixels_and_is_seeded(tiny_batch):
    x = torch.from_numpy(tiny_batch.x[:16]).float() / 255
    aug = Augment(hflip=True, vflip=True)

    a = augment_batch(x, aug, torch.Generator().manual_seed(1))
    b = augment_batch(x, aug, torch.Generator().manual_seed(1))
    c = augment_batch(x, aug, torch.Generator().manual_seed(2))

    assert a.shape == x.shape
    assert not torch.allclose(a, x, atol=1e-3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_zero_strength_augment_is_identity(tiny_batch):
    x = torch.from_numpy(tiny_batch.x[:8]).float() / 255
    aug = Augment(shift=0.0, rotation=0.0, scale=0.0)
    out = augment_batch(x, aug, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


# --- early stopping and L1 ------------------------------------------------------------

@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_when_val_loss_cannot_improve(data, monkeypatch, patience):
    train, val, _, norm = data
    monkeypatch.setattr(losses_mod, "evaluate_loss", lambda model, x, y: (1.0, 0.1))

    _, history = fit(small_cnn(), train, val, norm,
                     settings(epochs=6, patience=patience, augment=None))

    # epoch 1 sets the best; each later epoch is stale, stop after `patience` of them
    assert [row["epoch"] for row in history] == list(range(1, patience + 2))


def test_min_delta_counts_small_gains_as_stale(data, monkeypatch):
    train, val, _, norm = data
    losses = iter([1.0, 0.99, 0.98, 0.97, 0.96, 0.95])
    monkeypatch.setattr(losses_mod, "evaluate_loss", lambda model, x, y: (next(losses), 0.1))

    _, history = fit(small_cnn(), train, val, norm,
                     settings(epochs=6, patience=2, min_delta=0.05, augment=None))

    assert len(history) == 3


def test_fit_returns_the_best_epoch_weights(data, monkeypatch):
    train, val, _, norm = data
    seen = []

    def fake_eval(model, x, y):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return [0.5, 0.1, 0.9][len(seen) - 1], 0.1  # epoch 2 is best

    monkeypatch.setattr(losses_mod, "evaluate_loss", fake_eval)
    model, _ = fit(small_cnn(), train, val, norm, settings(epochs=3, augment=None))

    final = model.state_dict()
    assert all(torch.equal(final[k], seen[1][k]) for k in final)
    assert not all(torch.equal(final[k], seen[2][k]) for k in final)


def test_l1_penalty_sums_weights_not_biases():
    model = small_cnn()
    expected = sum(p.abs().sum() for n, p in model.named_parameters() if p.dim() > 1)
    biases = sum(p.abs().sum() for n, p in model.named_parameters() if p.dim() == 1)

    penalty = l1_penalty(model)

    assert penalty.item() > 0
    assert biases.item() > 0  # there are biases/norm scales to leave out
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    assert all(p.grad is not None for p in model.parameters() if p.dim() > 1)


def test_l1_adds_to_the_training_loss(data):
    train, val, _, norm = data
    l1 = 1e-3
    penalty = l1_penalty(small_cnn()).item()
    # lr ~ 0 keeps the weights (and so the penalty) fixed; same seed -> same batches, dropout
    frozen = dict(epochs=1, lr=1e-12, lr_schedule="none", augment=None)

    _, plain = fit(small_cnn(), train, val, norm, settings(**frozen))
    _, with_l1 = fit(small_cnn(), train, val, norm, settings(l1=l1, **frozen))

    added = with_l1[0]["train_loss"] - plain[0]["train_loss"]
    assert added > 0
    assert added == pytest.approx(l1 * penalty, rel=1e-3, abs=1e-5)


def test_non_finite_loss_is_reported(data):
    train, val, _, norm = data
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(small_cnn(), train, val, norm, settings(epochs=1),
            loss_fn=lambda logits, y, x: logits.sum() * float("nan"))


# --- checkpoint and resume ------------------------------------------------------------

class Interrupted(Exception):
    pass


def run3(data, checkpoint=None, key="", seed=0):
    train, val, _, norm = data
    return fit(small_cnn(seed), train, val, norm, settings(epochs=3), checkpoint=checkpoint,
               checkpoint_key=key)


def interrupt_after_epoch(monkeypatch, stop_at: int, saved: list):
    """Make the run die right after writing epoch `stop_at`'s checkpoint."""
    original = checkpoint_mod.save_checkpoint

    def save_then_maybe_die(path, state):
        original(path, state)
        saved.append(state["epoch"])
        if state["epoch"] == stop_at:
            raise Interrupted

    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", save_then_maybe_die)


def test_checkpoint_written_every_epoch(data, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt" / "train.pt"
    saved = []
    interrupt_after_epoch(monkeypatch, stop_at=99, saved=saved)

    run3(data, ckpt, key="k")

    assert saved == [1, 2, 3]
    state = torch.load(ckpt, weights_only=True)  # plain tensors and containers only
    assert (state["key"], state["epoch"], len(state["history"])) == ("k", 3, 3)


def test_resume_continues_at_next_epoch_and_matches_uninterrupted(data, tmp_path, monkeypatch,
                                                                  caplog):
    ckpt = tmp_path / "train.pt"
    reference, reference_history = run3(data)

    saved = []
    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch, stop_at=2, saved=saved)
        with pytest.raises(Interrupted):
            run3(data, ckpt, key="k")
    assert saved == [1, 2]

    caplog.set_level(logging.INFO, logger="evergreen.train")
    caplog.clear()  # only what the resumed run logs
    resumed, history = run3(data, ckpt, key="k", seed=123)  # weights come from the checkpoint

    assert "resumed from epoch 2" in caplog.text
    assert "epoch 1/3" not in caplog.text and "epoch 3/3" in caplog.text
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history == reference_history
    ref_state, state = reference.state_dict(), resumed.state_dict()
    assert state.keys() == ref_state.keys()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)


def test_different_key_ignores_the_checkpoint(data, tmp_path, monkeypatch, caplog):
    ckpt = tmp_path / "train.pt"
    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch, stop_at=2, saved=[])
        with pytest.raises(Interrupted):
            run3(data, ckpt, key="old")

    caplog.set_level(logging.INFO, logger="evergreen.train")
    caplog.clear()
    _, history = run3(data, ckpt, key="new")
    _, reference_history = run3(data)

    assert "resumed" not in caplog.text
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history == reference_history
    assert torch.load(ckpt, weights_only=True)["key"] == "new"


def test_lr_schedule_is_visible_in_history(data):
    train, val, _, norm = data
    _, cosine = fit(small_cnn(), train, val, norm, settings(epochs=3, augment=None))
    _, flat = fit(small_cnn(), train, val, norm,
                  settings(epochs=3, augment=None, lr_schedule="none"))
    assert [r["lr"] for r in flat] == [3e-3] * 3
    lrs = [r["lr"] for r in cosine]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]
    assert np.isclose(lrs[-1], 0.0)


def test_resume_after_early_stop_trains_no_further(data, tmp_path, monkeypatch):
    train, val, _, norm = data
    ckpt = tmp_path / "train.pt"
    monkeypatch.setattr(losses_mod, "evaluate_loss", lambda model, x, y: (1.0, 0.1))
    stopped = settings(epochs=5, patience=1, augment=None)
    first, history = fit(small_cnn(), train, val, norm, stopped, checkpoint=ckpt,
                         checkpoint_key="k")
    assert len(history) == 2  # stopped early at epoch 2

    # a retry of the same run (e.g. the task failed after fit) must give the same result
    again, retried = fit(small_cnn(), train, val, norm, stopped, checkpoint=ckpt,
                         checkpoint_key="k")

    assert retried == history


@pytest.mark.parametrize("augment", [Augment(), None])
def test_progressive_resizing_trains_the_early_epochs_smaller_and_ends_full_size(augment):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 3, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    torch.manual_seed(0)
    model = build_model("cnn", (3, 16, 16), 3, channels=[4, 8], stem_stride=1)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))

    _, history = fit(model, (x, y), (x[:16], y[:16]), ([0.5] * 3, [0.25] * 3),
                     settings(epochs=3, augment=augment, early_scale=0.5, early_share=0.67))

    trained = [side for training, side in seen if training]
    per_epoch = len(trained) // 3
    assert trained == [8] * 2 * per_epoch + [16] * per_epoch  # epochs 1-2 at 8 px, 3 at 16
    assert {side for training, side in seen if not training} == {16}  # validated full size
    assert all(math.isfinite(row["train_loss"]) for row in history)


def test_progressive_scale_below_one_needs_a_cnn():
    with pytest.raises(ValueError, match="progressive.scale 0.5 needs model cnn"):
        TrainConfig(model="vit", progressive={"scale": 0.5})
