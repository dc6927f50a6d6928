"""data/processed: the splits preprocess writes and every later stage reads, and the epoch
checkpoints whose key ties them to that data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from evergreen.config import params_hash
from evergreen.workspace import Workspace, atomic_write_bytes, read_json, write_json


def save_processed(ws: Workspace, processed) -> None:
    """Each split as data/processed/<name>.npz, and meta.json (classes, normalization, shape)."""
    out = ws.processed
    out.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in processed.splits.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x, y=y)
        atomic_write_bytes(out / f"{name}.npz", buf.getvalue())
    write_json(out / "meta.json", {"classes": processed.classes, "mean": processed.mean,
                                   "std": processed.std, "in_shape": list(processed.in_shape),
                                   **processed.info})


def load_split(ws: Workspace, name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, C, H, W) and int labels of one split."""
    with np.load(ws.processed / f"{name}.npz", allow_pickle=False) as npz:
        return npz["x"], npz["y"]


def read_meta(ws: Workspace) -> dict:
    """data/processed/meta.json: classes, mean, std, in_shape and preprocess's figures."""
    return read_json(ws.processed / "meta.json")


def checkpoint_for(ws: Workspace, stage: str, *parts) -> tuple[Path, str]:
    """Where a stage keeps its epoch checkpoint, and the key a resume must match."""
    return ws.state / "checkpoints" / f"{stage}.pt", params_hash({"parts": [str(p) for p in parts],
                                                                  "data": read_meta(ws)})
