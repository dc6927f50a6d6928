"""A dataset's split index: which samples each split holds (their batch's store and row) and
their labels, in one .npz beside the batches' shards. Every reader (a stage, a DDP rank on any
node) opens the splits from an index and a batches folder; the pixels are never copied."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes
from tasks.data.images import Images
from tasks.data.shards import ShardStore

INDEX = Path("data/processed/index.npz")  # under a workspace (or a job's data folder)
BATCHES = Path("data/batches")


def index_bytes(splits: dict[str, tuple[Images, np.ndarray]]) -> bytes:
    """The index of these splits (Images of one list of stores, named by their folders)."""
    arrays, batches = {}, None
    for name, (x, y) in splits.items():
        arrays |= {f"{name}_store": x.store_of, f"{name}_row": x.rows, f"{name}_y": y}
        names = [store.folder.name for store in x.stores]
        if batches is not None and names != batches:
            raise ValueError("the splits of one index share one list of batches")
        batches = names
    buf = io.BytesIO()
    np.savez(buf, batches=np.array(batches or [], dtype=str), **arrays)
    return buf.getvalue()


def write_index(path: Path, splits: dict[str, tuple[Images, np.ndarray]]) -> str:
    """Write the index atomically; returns its sha256 (what a reader checks it has)."""
    data = index_bytes(splits)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_split(index: Path, batches: Path, name: str) -> tuple[Images, np.ndarray]:
    """One split: its images (read from the batches' shards on demand) and int labels."""
    if not index.exists():
        raise BadInputError(f"{index}: no split index (data from before sharded storage, or not "
                            "preprocessed yet); run `evergreen run` to rebuild it")
    with np.load(index, allow_pickle=False) as npz:
        stores = [ShardStore(batches / str(b)) for b in npz["batches"]]
        missing = [s.folder for s in stores if not s.shards]
        if missing:
            raise BadInputError(f"{missing[0]}: the shards of a batch in {index} are missing; "
                                "`dvc pull` (or `dvc checkout`) the data version first")
        return Images(stores, npz[f"{name}_store"], npz[f"{name}_row"]), npz[f"{name}_y"]


def splits_sha256(splits: dict[str, tuple[Images, np.ndarray]]) -> str:
    """A content hash of the splits' index (batch names, stores, rows, labels): two nodes with
    the same data version agree on it, whatever their paths."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        x, y = splits[name]
        digest.update(name.encode() + b"\0" + "\0".join(s.folder.name for s in x.stores).encode())
        for array in (x.store_of, x.rows, np.asarray(y, np.int64)):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def open_splits(root: Path, names: tuple[str, ...]) -> dict[str, tuple[Images, np.ndarray]]:
    """The splits of the data under root (a workspace: INDEX and BATCHES)."""
    return {name: read_split(root / INDEX, root / BATCHES, name) for name in names}


def write_arrays(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 max_bytes: int = 128 * 2**20) -> None:
    """In-memory splits (tests, benchmarks) written under root as a workspace's data is: a
    batch of shards per split, and the index."""
    from tasks.data.shards import write_shards

    stores = []
    for name, (x, _) in splits.items():
        write_shards([x], root / BATCHES / name, name, max_bytes)
        stores.append(ShardStore(root / BATCHES / name))
    indexed = {name: (Images(stores, np.full(len(y), k), np.arange(len(y))), np.asarray(y))
               for k, (name, (_, y)) in enumerate(splits.items())}
    (root / INDEX).parent.mkdir(parents=True, exist_ok=True)
    write_index(root / INDEX, indexed)
