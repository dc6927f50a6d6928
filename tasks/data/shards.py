"""Images as fixed-size shards: <name>.npy (uint8 N, C, H, W), listed with their counts and hashes
in manifest.json. Labels and metadata live beside them (the batch's table, preprocess's index).

Readers take samples with positional reads (os.preadv) into arrays they own: no memory map whose
touched pages would count in the process's resident memory, no open file or offset shared with
a forked DataLoader worker. The page cache still serves a second epoch from RAM when it fits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evergreen.workspace import atomic_write_text

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    name: str
    count: int
    sha256: str  # of the file: a shard is immutable once listed


class ShardWriter:
    """Packs images into shards of at most max_bytes of pixels (one image at least), named
    <prefix>-<n>; `close` lists them in the manifest. Memory holds one shard at a time."""

    def __init__(self, folder: Path, prefix: str, max_bytes: int):
        self.folder, self.prefix, self.max_bytes = folder, prefix, max_bytes
        self.written: list[Shard] = []
        self.pending: list[np.ndarray] = []
        self.size = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, x: np.ndarray) -> None:
        """Images (N, C, H, W), cut at the shard size in slices (no per-image copy)."""
        item = int(np.prod(x.shape[1:])) or 1
        while len(x):
            room = max(self.max_bytes - self.size, 0) // item
            if room == 0 and self.pending:
                self.flush()
                continue
            take = max(room, 1)
            self.pending.append(x[:take])
            self.size += len(x[:take]) * item
            x = x[take:]

    def flush(self) -> None:
        if self.pending:
            name = f"{self.prefix}-{len(self.written):05d}"
            images = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
            images = np.ascontiguousarray(images, dtype=np.uint8)
            self.written.append(Shard(name, len(images), save_npy(self.folder / f"{name}.npy", images)))
            self.pending, self.size = [], 0

    def close(self) -> list[Shard]:
        self.flush()
        manifest = read_manifest(self.folder) + self.written
        atomic_write_text(self.folder / MANIFEST,
                          json.dumps({"shards": [asdict(s) for s in manifest]}, indent=1))
        return self.written


def save_npy(path: Path, images: np.ndarray) -> str:
    """The array as a .npy written aside, fsynced and renamed into place; its sha256."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(images))
    digest = hashlib.sha256(header.getvalue())
    body = memoryview(images.reshape(-1)).cast("B")
    digest.update(body)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(header.getvalue())
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return digest.hexdigest()


def write_shards(blocks: Iterable[np.ndarray], folder: Path, prefix: str,
                 max_bytes: int) -> list[Shard]:
    """Pack image blocks into shards and append them to the folder's manifest."""
    writer = ShardWriter(folder, prefix, max_bytes)
    for x in blocks:
        writer.add(x)
    return writer.close()


def read_manifest(folder: Path) -> list[Shard]:
    path = folder / MANIFEST
    return [Shard(**s) for s in json.loads(path.read_text())["shards"]] if path.exists() else []


def npy_layout(path: Path) -> tuple[int, tuple[int, ...]]:
    """Where a .npy file's data begins and its shape (a C-ordered uint8 array is required)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran or dtype != np.uint8:
            raise ValueError(f"{path}: a shard holds C-ordered uint8 images, not {dtype}")
        return fh.tell(), tuple(shape)


class ShardStore:
    """The images of a shard folder by global index (manifest order), read on demand."""

    def __init__(self, folder: Path):
        self.folder, self.shards = folder, read_manifest(folder)
        self.bounds = np.cumsum([0] + [s.count for s in self.shards])
        self._layout: dict[int, tuple[int, tuple[int, ...]]] = {}

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.shards]

    def path(self, k: int) -> Path:
        return self.folder / f"{self.shards[k].name}.npy"

    def layout(self, k: int) -> tuple[int, tuple[int, ...]]:
        if k not in self._layout:
            self._layout[k] = npy_layout(self.path(k))
        return self._layout[k]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.layout(0)[1][1:]

    def shard_of(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.bounds, indices, side="right") - 1

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Images (len, C, H, W) of these global indices, in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.folder}: indices must lie in 0..{len(self) - 1}")
        out = np.empty((len(indices), *self.image_shape), np.uint8)
        shard_of = self.shard_of(indices)
        for k in np.unique(shard_of):
            at = np.flatnonzero(shard_of == k)
            out[at] = self.read_rows(int(k), indices[at] - self.bounds[k])
        return out

    def read_rows(self, k: int, rows: np.ndarray) -> np.ndarray:
        """Rows of shard k: each run of consecutive rows is one positional read."""
        start, shape = self.layout(k)
        item = int(np.prod(shape[1:]))
        unique, inverse = np.unique(rows, return_inverse=True)
        buf = np.empty((len(unique), *shape[1:]), np.uint8)
        flat = buf.reshape(len(unique), item)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        fd = os.open(self.path(k), os.O_RDONLY)
        try:
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(unique)], strict=True):
                view = memoryview(flat[lo:hi]).cast("B")
                got = os.preadv(fd, [view], start + int(unique[lo]) * item)
                if got != len(view):
                    raise OSError(f"{self.path(k)}: short read ({got} of {len(view)} bytes)")
        finally:
            os.close(fd)
        return buf[inverse]
