"""Shards and the sample order (issue 19 groundwork): round trips, bounded shards, a
deterministic, resumable order that ranks partition for any world size."""

import json

import numpy as np
import pytest

from tasks.data import ShardStore, epoch_order, rank_share, write_shards


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 4, 4), dtype=np.uint8)


def test_shards_round_trip_by_global_index_across_batches(tmp_path):
    x1, x2 = images(23), images(9, seed=1)
    one_image = x1[0].nbytes
    written = write_shards([(x1[:10], np.arange(10)), (x1[10:], np.arange(10, 23))], tmp_path,
                           "b1", max_bytes=5 * one_image)
    assert [s.count for s in written] == [5, 5, 5, 5, 3]  # blocks do not decide shard bounds
    write_shards([(x2, np.arange(100, 109))], tmp_path, "b2", max_bytes=5 * one_image)
    store = ShardStore(tmp_path)
    assert len(store) == 32 and store.counts == [5, 5, 5, 5, 3, 5, 4]
    idx = np.array([31, 0, 22, 23, 4, 5])
    x, y = store.get(idx)
    everything = np.concatenate([x1, x2])
    assert np.array_equal(x, everything[idx])
    assert y.tolist() == [108, 0, 22, 100, 4, 5]
    names = [s["name"] for s in json.loads((tmp_path / "manifest.json").read_text())["shards"]]
    assert names[0] == "b1-00000" and names[-1] == "b2-00001"  # a new batch adds shards only
    with pytest.raises(IndexError, match="0..31"):
        store.get(np.array([32]))


def test_the_order_is_a_seeded_permutation_that_changes_by_epoch():
    counts = [50, 50, 50, 17]
    first = epoch_order(counts, seed=3, epoch=0, window=40)
    assert sorted(first.tolist()) == list(range(167))
    assert np.array_equal(first, epoch_order(counts, seed=3, epoch=0, window=40))
    assert not np.array_equal(first, epoch_order(counts, seed=3, epoch=1, window=40))
    assert not np.array_equal(first, epoch_order(counts, seed=4, epoch=0, window=40))


def test_a_window_touches_few_shards():
    counts = [100] * 10
    order = epoch_order(counts, seed=0, epoch=0, window=50)
    shard = order // 100
    assert max(len(set(shard[i:i + 50])) for i in range(0, 1000, 50)) <= 2


def test_ranks_partition_the_epoch_and_a_resume_continues_it():
    order = epoch_order([30, 30, 11], seed=1, epoch=2, window=16)
    for world in (1, 2, 3):
        shares = [rank_share(order, r, world) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        together = np.stack(shares, 1).ravel()  # position by position, as the global batches are
        assert np.array_equal(together, order[:len(together)])
    resumed = rank_share(order, 1, 2, position=20)
    assert np.array_equal(resumed, rank_share(order, 1, 2)[10:])
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        rank_share(order, 2, 2)
