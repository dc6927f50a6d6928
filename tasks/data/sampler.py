"""The order samples are read in: a function of (shard counts, seed, epoch) alone.

Shards are visited in a seeded order and samples shuffled inside windows of `window` samples
(a block shuffle: each window touches few shards, so reads stay near-sequential). The global
order does not depend on the world size; rank r of W takes every W-th position from r, so the
ranks partition each global batch of W × B samples. A run that stops at position p resumes
with `order[p:]`: the same samples in the same order as an uninterrupted epoch.
"""

from __future__ import annotations

import numpy as np


def epoch_order(counts: list[int], seed: int, epoch: int, window: int) -> np.ndarray:
    """A permutation of range(sum(counts)), the same for the same arguments."""
    rng = np.random.default_rng([seed, epoch])
    starts = np.cumsum([0] + list(counts))[:-1]
    shards = rng.permutation(len(counts))
    order = np.concatenate([np.arange(starts[k], starts[k] + counts[k]) for k in shards]) \
        if counts else np.zeros(0, np.int64)
    for begin in range(0, len(order), window):
        rng.shuffle(order[begin:begin + window])
    return order


def rank_share(order: np.ndarray, rank: int, world: int, position: int = 0) -> np.ndarray:
    """Rank `rank`'s samples of the epoch from global position `position` on (a resume point:
    a multiple of world × batch), the tail cut so every rank gets as many."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    rest = order[position:]
    even = len(rest) - len(rest) % world
    return rest[rank:even:world]
