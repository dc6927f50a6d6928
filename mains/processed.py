"""data/processed: the index preprocess writes (each split's samples: batch, row, label) and
every later stage reads, the images staying in the batches' shards; and the epoch checkpoints
whose key ties them to that data."""

from __future__ import annotations

from pathlib import Path

from evergreen.config import params_hash
from evergreen.workspace import Workspace, read_json, write_json

INDEX = "index.npz"


def save_processed(ws: Workspace, processed) -> None:
    """index.npz (per split: store, row and label of each sample; the batches' names) and
    meta.json (classes, normalization, shape and preprocess's figures)."""
    from tasks.data.index import write_index

    out = ws.processed
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.npz"):  # the splits as pixel copies, before the index
        if stale.name != INDEX:
            stale.unlink()
    sha = write_index(out / INDEX, processed.splits)
    batches = [store.folder.name for store in processed.splits["train"][0].stores]
    write_json(out / "meta.json", {"classes": processed.classes, "mean": processed.mean,
                                   "std": processed.std, "in_shape": list(processed.in_shape),
                                   "batches": batches, "index_sha256": sha, **processed.info})


def load_split(ws: Workspace, name: str):
    """One split: its images (tasks.data.Images, read from the batches' shards on demand) and
    int labels."""
    from tasks.data.index import read_split

    return read_split(ws.processed / INDEX, ws.batches, name)


def read_meta(ws: Workspace) -> dict:
    """data/processed/meta.json: classes, mean, std, in_shape and preprocess's figures."""
    return read_json(ws.processed / "meta.json")


def checkpoint_for(ws: Workspace, stage: str, *parts) -> tuple[Path, str]:
    """Where a stage keeps its epoch checkpoint, and the key a resume must match."""
    return ws.state / "checkpoints" / f"{stage}.pt", params_hash({"parts": [str(p) for p in parts],
                                                                  "data": read_meta(ws)})
