"""The fit loop on shards: it reads only batches (never the whole split), its order is the
sampler's, and a run killed inside an epoch resumes at the recorded sample with the weights
of an unbroken run."""

import logging

import numpy as np
import pytest
import torch

import tasks.train.checkpoint as checkpoint_mod
from tasks.data import Images
from tasks.data.index import open_splits, write_arrays
from tasks.train import FitSettings, fit
from tasks.train.augment import Augment
from tasks.train.feed import plan_epoch
from tasks.train.replica import Replica
from tests.tasks.test_train import small_cnn


@pytest.fixture
def sharded(data, tmp_path):
    """The tiny dataset's train and val written as shards of 40 images, opened back."""
    train, val, classes, norm = data
    write_arrays(tmp_path / "ws", {"train": train, "val": val}, max_bytes=40 * train[0][0].nbytes)
    splits = open_splits(tmp_path / "ws", ("train", "val"))
    return splits["train"], splits["val"], classes, norm


def settings(**overrides):
    base = dict(epochs=2, batch_size=16, lr=3e-3, augment=Augment(), checkpoint_every_s=0.0,
                shuffle_window=64, streams=4)
    return FitSettings(**{**base, **overrides})


def test_fit_reads_the_train_split_batch_by_batch(sharded):
    train, val, _, norm = sharded
    assert isinstance(train[0], Images) and len(train[0].run_lengths()) > 2
    reads, take = [], train[0].take
    train[0].take = lambda positions: reads.append(len(positions)) or take(positions)
    _, history = fit(small_cnn(), train, val, norm, settings())
    assert all(np.isfinite(r["train_loss"]) for r in history)
    assert max(reads) == 16 and sum(reads) == 2 * len(train[1])  # two epochs, batch by batch


class Killed(Exception):
    pass


def test_a_run_killed_inside_an_epoch_resumes_at_its_sample_with_unbroken_weights(
        sharded, tmp_path, monkeypatch, caplog):
    train, val, _, norm = sharded
    reference, reference_history = fit(small_cnn(), train, val, norm, settings(epochs=3))
    ckpt, saved = tmp_path / "train.pt", []
    original = checkpoint_mod.save_checkpoint

    def save_then_die(path, state):  # dies right after the 5th checkpoint inside epoch 2
        original(path, state)
        if state["epoch"] == 2 and state["position"]:
            saved.append(state["position"])
            if len(saved) == 5:
                raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_mod, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            fit(small_cnn(), train, val, norm, settings(epochs=3), checkpoint=ckpt,
                checkpoint_key="k")
    assert saved == [16, 32, 48, 64, 80]

    caplog.set_level(logging.INFO, logger="evergreen.train")
    caplog.clear()
    resumed, history = fit(small_cnn(seed=9), train, val, norm, settings(epochs=3),
                           checkpoint=ckpt, checkpoint_key="k")
    assert "resumed inside epoch 2 at sample 80" in caplog.text
    assert "epoch 1/3" not in caplog.text
    assert history == reference_history
    ref, got = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_ranks_read_disjoint_shares_of_the_same_global_order(sharded):
    train = sharded[0][0]
    one = plan_epoch(train, seed=1, epoch=1, window=64, streams=4, replica=Replica())
    shares = [plan_epoch(train, 1, 1, 64, 4, Replica(rank=r, world=2)) for r in (0, 1)]
    assert all(np.array_equal(s.order, one.order) for s in shares)  # any world dividing 4
    assert not (shares[0].mine & shares[1].mine).any()
    assert (shares[0].mine | shares[1].mine).all()
    read = [set(train.shards(s.order[s.mine])) for s in shares]
    assert len(read[0] & read[1]) <= 3  # at most the shards the 3 stream boundaries cut
    by_rank = [plan_epoch(train, 1, 1, 64, None, Replica(rank=r, world=2)) for r in (0, 1)]
    read = [set(train.shards(s.order[s.mine])) for s in by_rank]  # a stream each: one cut
    assert len(read[0] & read[1]) <= 1 and len(read[0] | read[1]) == len(train.run_lengths())
