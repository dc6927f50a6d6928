"""Shards, the split view over them and the sample order: round trips, bounded shards, reads
that take only what is asked, and a deterministic, resumable order that ranks partition."""

import json

import numpy as np
import pytest

from tasks.data import (
    Images,
    ShardStore,
    chunks,
    epoch_order,
    join,
    rank_mask,
    streams_for,
    write_shards,
)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 4, 4), dtype=np.uint8)


def test_shards_round_trip_by_global_index_across_batches(tmp_path):
    x1, x2 = images(23), images(9, seed=1)
    one_image = x1[0].nbytes
    written = write_shards([x1[:10], x1[10:]], tmp_path, "b1", max_bytes=5 * one_image)
    assert [s.count for s in written] == [5, 5, 5, 5, 3]  # blocks do not decide shard bounds
    write_shards([x2], tmp_path, "b2", max_bytes=5 * one_image)
    store = ShardStore(tmp_path)
    assert len(store) == 32 and store.counts == [5, 5, 5, 5, 3, 5, 4]
    idx = np.array([31, 0, 22, 23, 4, 5, 5, 6, 7])  # repeats and runs, out of order
    everything = np.concatenate([x1, x2])
    assert np.array_equal(store.get(idx), everything[idx])
    names = [s["name"] for s in json.loads((tmp_path / "manifest.json").read_text())["shards"]]
    assert names[0] == "b1-00000" and names[-1] == "b2-00001"  # a new batch adds shards only
    assert (tmp_path / "b1-00000.npy").stat().st_size < one_image * 5 + 200  # plain .npy
    with pytest.raises(IndexError, match="0..31"):
        store.get(np.array([32]))


def test_images_index_like_an_array_and_refuse_to_load_whole(tmp_path):
    a, b = images(20), images(15, seed=2)
    write_shards([a], tmp_path / "a", "a", max_bytes=6 * a[0].nbytes)
    write_shards([b], tmp_path / "b", "b", max_bytes=6 * a[0].nbytes)
    stores = [ShardStore(tmp_path / "a"), ShardStore(tmp_path / "b")]
    store_of = np.array([1] * 5 + [0] * 10)
    rows = np.r_[np.arange(10, 15), np.arange(3, 13)]
    x = Images(stores, store_of, rows)
    truth = np.concatenate([b[10:15], a[3:13]])
    assert x.shape == (15, 3, 4, 4) and len(x) == 15
    assert np.array_equal(x[2:9], truth[2:9]) and np.array_equal(x[3], truth[3])
    assert np.array_equal(x[np.array([14, 0, 7])], truth[[14, 0, 7]])
    mask = np.arange(15) % 3 == 0
    assert np.array_equal(x[mask], truth[mask]) and np.array_equal(x.subset(mask)[:], truth[mask])
    assert np.array_equal(np.concatenate(list(chunks(x, 4))), truth)
    assert np.array_equal(join(x.subset(np.arange(3)), x.subset(np.arange(12, 15)))[:],
                          truth[[0, 1, 2, 12, 13, 14]])
    assert x.shards(np.arange(5)) == ["b-00001", "b-00002"]
    assert x.run_lengths() == [2, 3, 3, 6, 1]  # b-00001, b-00002, a-00000, a-00001, a-00002
    with pytest.raises(TypeError, match="refusing to load all 15 images"):
        np.asarray(x)


def test_the_order_is_a_seeded_permutation_that_changes_by_epoch():
    runs = [50, 50, 50, 17]
    first, _ = epoch_order(runs, seed=3, epoch=0, window=40, streams=4)
    assert sorted(first.tolist()) == list(range(167))
    assert np.array_equal(first, epoch_order(runs, seed=3, epoch=0, window=40, streams=4)[0])
    assert not np.array_equal(first, epoch_order(runs, seed=3, epoch=1, window=40, streams=4)[0])
    assert not np.array_equal(first, epoch_order(runs, seed=4, epoch=0, window=40, streams=4)[0])


def test_a_window_touches_few_shards():
    order, _ = epoch_order([100] * 10, seed=0, epoch=0, window=50)
    shard = order // 100
    assert max(len(set(shard[i:i + 50])) for i in range(0, 1000, 50)) <= 2


def test_every_batch_draws_from_every_stream_and_ranks_read_disjoint_streams():
    order, stream = epoch_order([100] * 8, seed=1, epoch=2, window=64, streams=8)
    assert all(len(set(stream[i:i + 16])) == 8 for i in range(0, 800, 16))
    for world in (1, 2, 4, 8):
        masks = [rank_mask(stream, r, world) for r in range(world)]
        assert np.array_equal(np.sum(masks, 0), np.ones(800))  # a partition of every batch
        shards = [set(order[m] // 100) for m in masks]
        assert sum(len(s) for s in shards) == 8  # disjoint shards when streams cut at shards
    assert streams_for(8, 2) == 8 and streams_for(8, 3) == 9
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        rank_mask(stream, 2, 2)
