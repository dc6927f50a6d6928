"""A split's images as an array-like over shards: indexing reads only the samples asked for.

`Images` answers len, shape, dtype and indexing (an int, a slice, an index array or a boolean
mask) with a uint8 ndarray, as an in-memory array would. Converting the whole of it to an array
is refused: a stage that needs every sample walks `chunks` instead, and memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tasks.data.shards import ShardStore

CHUNK = 1024  # samples per read when a stage walks a split


class Images:
    """Images (N, C, H, W) uint8: sample i is row rows[i] of stores[store_of[i]]."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, stores: list[ShardStore], store_of: np.ndarray, rows: np.ndarray):
        self.stores, self.store_of = stores, np.asarray(store_of, np.int32)
        self.rows = np.asarray(rows, np.int64)
        image = stores[0].image_shape if stores else (0, 0, 0)
        self.shape = (len(self.rows), *image)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        for block in chunks(self):
            yield from block

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"refusing to load all {len(self)} images of a split into memory: "
                        "index it, or walk it with tasks.data.chunks")

    def __getitem__(self, key):
        if isinstance(key, int | np.integer):
            return self.take(np.array([int(key)]))[0]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"a mask of {key.shape} for {len(self)} images")
            key = np.flatnonzero(key)
        return self.take(key)

    def take(self, positions: np.ndarray, axis: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """The images at these positions, in that order (into `out` when given, as
        ndarray.take along axis 0)."""
        if axis != 0:
            raise ValueError("Images are taken along axis 0 only")
        positions = np.asarray(positions, np.int64)
        if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"positions must lie in 0..{len(self) - 1}")
        positions = positions % max(len(self), 1)
        if out is None:
            out = np.empty((len(positions), *self.shape[1:]), np.uint8)
        which = self.store_of[positions]
        for s in np.unique(which):
            at = np.flatnonzero(which == s)
            out[at] = self.stores[int(s)].get(self.rows[positions[at]])
        return out

    def subset(self, positions: np.ndarray) -> Images:
        """A view of some samples (no read)."""
        positions = np.asarray(positions)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        return Images(self.stores, self.store_of[positions], self.rows[positions])

    def shards(self, positions: np.ndarray | None = None) -> list[str]:
        """The shard files these positions (all by default) are read from."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        names = set()
        for s in np.unique(self.store_of[positions]):
            store = self.stores[int(s)]
            rows = self.rows[positions[self.store_of[positions] == s]]
            names |= {store.shards[k].name for k in np.unique(store.shard_of(rows))}
        return sorted(names)

    def run_lengths(self) -> list[int]:
        """Sizes of the runs of consecutive samples that sit in one shard (for block shuffles)."""
        if not len(self):
            return []
        shard = np.empty(len(self), np.int64)
        for s in np.unique(self.store_of):
            at = np.flatnonzero(self.store_of == s)
            shard[at] = self.stores[int(s)].shard_of(self.rows[at]) + (int(s) << 32)
        breaks = np.flatnonzero(np.diff(shard) != 0) + 1
        return np.diff(np.r_[0, breaks, len(self)]).tolist()


def subset(x, positions):
    """Some samples of an array (a copy) or of Images (a view, nothing read)."""
    return x.subset(positions) if isinstance(x, Images) else x[positions]


def join(a, b):
    """Two splits' images as one: Images of the same stores stay views, arrays concatenate."""
    if isinstance(a, Images) and isinstance(b, Images):
        if [s.folder for s in a.stores] != [s.folder for s in b.stores]:
            raise ValueError("joining images of different batch lists")
        return Images(a.stores, np.r_[a.store_of, b.store_of], np.r_[a.rows, b.rows])
    return np.concatenate([a, b])


def chunks(x, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Consecutive blocks of an array or of Images, `size` samples at most."""
    for i in range(0, len(x), size):
        yield x[i:i + size]


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
    """k positions drawn without replacement from n (all of them when k >= n), sorted."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
