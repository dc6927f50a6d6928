"""The order samples are read in: a function of (run lengths, seed, epoch, window, streams).

An epoch visits the shards (runs of samples stored together) in a seeded order and cuts that
sequence into `streams` equal contiguous parts; each part is shuffled inside windows of `window`
samples (a block shuffle: reads stay near-sequential), and the global order takes the streams in
turn, one sample each. Every global batch so draws evenly from all streams.

Distributed, rank r of W reads the streams s with s % W == r and trains on the positions of each
global batch that come from them: the ranks read disjoint parts of the data (disjoint shards,
but for those a stream boundary cuts, read by two ranks in two halves). By default there is a
stream per rank (the fewest cuts), so the order depends on the world size; a pinned number of
streams gives every world size that divides it the same global order, hence the same global
batches (see `streams_for`). A run that stops at position p resumes with the positions from p
on: the same samples in the same order.
"""

from __future__ import annotations

import numpy as np


def streams_for(streams: int | None, world: int) -> int:
    """The streams a job of `world` ranks uses: one per rank by default, `streams` when the
    world divides it, else the next multiple of the world."""
    if streams is None:
        return world
    return streams if streams % world == 0 else streams + world - streams % world


def epoch_order(runs: list[int], seed: int, epoch: int, window: int,
                streams: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's global order (a permutation of range(sum(runs))) and each position's stream."""
    rng = np.random.default_rng([seed, epoch])
    starts = np.cumsum([0] + list(runs))[:-1]
    visit = rng.permutation(len(runs))
    order = np.concatenate([np.arange(starts[k], starts[k] + runs[k]) for k in visit]) \
        if runs else np.zeros(0, np.int64)
    parts = np.array_split(order, max(1, min(streams, len(order) or 1)))
    for part in parts:
        for begin in range(0, len(part), window):
            rng.shuffle(part[begin:begin + window])
    step = np.concatenate([np.arange(len(p)) for p in parts]) if parts else np.zeros(0, np.int64)
    stream = np.concatenate([np.full(len(p), s) for s, p in enumerate(parts)]).astype(np.int64)
    interleave = np.lexsort((stream, step))  # position j of every stream, then j + 1, ...
    return np.concatenate(parts)[interleave].astype(np.int64), stream[interleave]


def rank_mask(stream: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Which positions rank `rank` of `world` trains on: those of its streams."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return stream % world == rank
