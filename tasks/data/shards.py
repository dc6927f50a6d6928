"""Samples as fixed-size shards: <name>.x.npy (uint8 N, C, H, W) and <name>.y.npy (int64 labels),
listed with their counts and hashes in manifest.json. Readers map the files (no copy in RAM);
each process opens its own maps, so a forked DataLoader worker shares nothing but paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evergreen.workspace import atomic_write_bytes, atomic_write_text

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    name: str
    count: int
    sha256: str  # of the images file: a shard is immutable once listed


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_shards(blocks: Iterable[tuple[np.ndarray, np.ndarray]], folder: Path, prefix: str,
                 max_bytes: int) -> list[Shard]:
    """Pack (images, labels) blocks into shards of at most max_bytes of pixels each (one image at
    least), named <prefix>-<n>; append them to the manifest. Memory holds one shard at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    written, pending_x, pending_y, size = [], [], [], 0
    for x, y in blocks:
        for i in range(len(x)):
            if pending_x and size + x[i].nbytes > max_bytes:
                written.append(save_shard(folder, f"{prefix}-{len(written):05d}", pending_x, pending_y))
                pending_x, pending_y, size = [], [], 0
            pending_x.append(x[i])
            pending_y.append(int(y[i]))
            size += x[i].nbytes
    if pending_x:
        written.append(save_shard(folder, f"{prefix}-{len(written):05d}", pending_x, pending_y))
    manifest = read_manifest(folder) + written
    atomic_write_text(folder / MANIFEST, json.dumps({"shards": [asdict(s) for s in manifest]}, indent=1))
    return written


def save_shard(folder: Path, name: str, xs: list[np.ndarray], ys: list[int]) -> Shard:
    images = npy_bytes(np.stack(xs))
    atomic_write_bytes(folder / f"{name}.x.npy", images)
    atomic_write_bytes(folder / f"{name}.y.npy", npy_bytes(np.asarray(ys, dtype=np.int64)))
    return Shard(name, len(xs), hashlib.sha256(images).hexdigest())


def read_manifest(folder: Path) -> list[Shard]:
    path = folder / MANIFEST
    return [Shard(**s) for s in json.loads(path.read_text())["shards"]] if path.exists() else []


class ShardStore:
    """The samples of a shard folder by global index (manifest order), memory-mapped."""

    def __init__(self, folder: Path):
        self.folder, self.shards = folder, read_manifest(folder)
        self.bounds = np.cumsum([0] + [s.count for s in self.shards])
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.shards]

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard k's images and labels, mapped on first use in this process."""
        name = self.shards[k].name
        if name not in self._maps:
            self._maps[name] = (np.load(self.folder / f"{name}.x.npy", mmap_mode="r"),
                                np.load(self.folder / f"{name}.y.npy", mmap_mode="r"))
        return self._maps[name]

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images (len, C, H, W) and labels of these global indices, in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.folder}: indices must lie in 0..{len(self) - 1}")
        shard_of = np.searchsorted(self.bounds, indices, side="right") - 1
        x = np.empty((len(indices), *self.arrays(0)[0].shape[1:]), np.uint8) if len(self) else None
        y = np.empty(len(indices), np.int64)
        for k in np.unique(shard_of):  # one shard at a time: sequential pages within it
            at = np.flatnonzero(shard_of == k)
            xs, ys = self.arrays(int(k))
            local = indices[at] - self.bounds[k]
            x[at], y[at] = xs[local], ys[local]
        return x, y
