"""Ingest: read a source into a packed, content-addressed batch plus per-sample metadata."""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes, atomic_write_text
from tasks.readers import Batch, Rejected, read_idx, read_source
from tasks.readers import load_digits_batch as load_digits_batch  # re-exported

if TYPE_CHECKING:  # pandas costs 0.6 s to import: loaded where a table is built or read
    import pandas as pd

META_COLUMNS = ["content_hash", "label", "height", "width", "channels",
                "pixel_min", "pixel_max", "pixel_mean", "source", "batch_id"]


def content_hash(image: np.ndarray) -> str:
    """sha256 of the shape and the pixels: equal images, equal hash, whatever the file."""
    return hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


def metadata_table(batch: Batch, hashes: list[str], batch_id: str) -> pd.DataFrame:
    """One row per sample: hash, label, shape, pixel statistics, source."""
    import pandas as pd

    n, c, h, w = batch.x.shape
    if n == 0:
        return pd.DataFrame(columns=META_COLUMNS)
    x = batch.x.reshape(n, c * h * w)
    return pd.DataFrame({
        "content_hash": hashes, "label": batch.labels.astype(str),
        "height": h, "width": w, "channels": c,
        "pixel_min": x.min(axis=1), "pixel_max": x.max(axis=1),
        "pixel_mean": x.mean(axis=1).round(4),
        "source": batch.sources, "batch_id": batch_id,
    }, columns=META_COLUMNS)


def read_metadata(batches_dir: Path) -> pd.DataFrame:
    """All batches' metadata rows, oldest batch first."""
    import pandas as pd

    files = sorted(batches_dir.glob("*.csv")) if batches_dir.exists() else []
    frames = [pd.read_csv(f, dtype={"label": str, "content_hash": str, "batch_id": str,
                                   "source": str}, keep_default_na=False) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=META_COLUMNS)


def has_samples(batches_dir: Path) -> bool:
    """Whether any batch's metadata holds a row (without reading the tables)."""
    for path in batches_dir.glob("*.csv") if batches_dir.exists() else []:
        with path.open() as fh:
            if fh.readline() and fh.readline().strip():
                return True
    return False


def read_batches(batches_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Every batch concatenated: pixels (N, C, H, W), labels (N,), metadata rows."""
    meta = read_metadata(batches_dir)
    if meta.empty:
        raise BadInputError(f"{batches_dir}: no data batches; run `evergreen ingest SRC` first")
    xs, ys = [], []
    for batch_id in dict.fromkeys(meta["batch_id"]):
        with np.load(batches_dir / f"{batch_id}.npz", allow_pickle=False) as npz:
            xs.append(npz["x"])
            ys.append(npz["labels"].astype(str))
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        raise BadInputError(f"{batches_dir}: batches hold images of different shapes {shapes}")
    return np.concatenate(xs), np.concatenate(ys), meta


def dedupe(batch: Batch, known: set[str]) -> tuple[Batch, list[str], int, int]:
    """Drop samples repeated inside the batch or already in the dataset (by content hash)."""
    hashes = [content_hash(img) for img in batch.x]
    keep, seen, repeats, present = np.zeros(len(batch), bool), set(), 0, 0
    for i, h in enumerate(hashes):
        if h in known:
            present += 1
        elif h in seen:
            repeats += 1
        else:
            keep[i] = True
            seen.add(h)
    return batch.take(keep), [h for h, k in zip(hashes, keep, strict=False) if k], repeats, present


def write_batch(batch: Batch, hashes: list[str], batches_dir: Path) -> str:
    """Land a batch directly (no checks): shard, then metadata. Returns its id."""
    batch_id = batch_id_of(hashes, batch.labels)
    land_batch(Candidate("", batch, hashes, batch_id, metadata_table(batch, hashes, batch_id),
                         [], 0, 0), batches_dir)
    return batch_id


@dataclass
class Candidate:
    """A read, deduplicated batch that is not in the dataset yet."""

    source: str | tuple[str, str]
    batch: Batch
    hashes: list[str]
    batch_id: str
    meta: pd.DataFrame
    rejected: list[Rejected]
    repeats: int
    present: int

    @property
    def duplicates(self) -> int:
        return self.repeats + self.present


def batch_id_of(hashes: list[str], labels: np.ndarray) -> str:
    """Content address of a batch: its samples and labels, in any order."""
    pairs = sorted(f"{h}:{y}" for h, y in zip(hashes, labels))
    return hashlib.sha256("".join(pairs).encode()).hexdigest()[:16]


def prepare_batch(source: str | tuple[str, str], cfg: IngestConfig, batches_dir: Path,
                  workspace: Path | None = None) -> Candidate:
    """Read `source` (or an IDX (images, labels) pair) and drop samples already in the
    dataset or repeated in the batch."""
    if isinstance(source, tuple):
        batch, rejected = read_idx(Path(source[0]), Path(source[1]), cfg, workspace)
    else:
        batch, rejected = read_source(source, cfg, workspace)
    known = set(read_metadata(batches_dir)["content_hash"])
    fresh, hashes, repeats, present = dedupe(batch, known)
    batch_id = batch_id_of(hashes, fresh.labels)
    meta = metadata_table(fresh, hashes, batch_id)
    return Candidate(source, fresh, hashes, batch_id, meta, rejected, repeats, present)


def pack_shard(batch: Batch) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=batch.x, labels=batch.labels.astype(str))
    return buf.getvalue()


def land_batch(candidate: Candidate, batches_dir: Path) -> None:
    """Write the shard (.npz), then the metadata (.csv), which marks the batch as landed."""
    atomic_write_bytes(batches_dir / f"{candidate.batch_id}.npz", pack_shard(candidate.batch))
    atomic_write_bytes(batches_dir / f"{candidate.batch_id}.csv",
                       candidate.meta.to_csv(index=False).encode())


def quarantine_candidate(candidate: Candidate, reasons: list[str], quarantine_dir: Path) -> Path:
    """Keep a rejected batch whole in quarantine/<batch-id>/ with its reasons; never delete it."""
    target = quarantine_dir / candidate.batch_id
    target.mkdir(parents=True, exist_ok=True)
    if len(candidate.batch):
        atomic_write_bytes(target / "batch.npz", pack_shard(candidate.batch))
        atomic_write_bytes(target / "metadata.csv", candidate.meta.to_csv(index=False).encode())
    lines = [f"source: {candidate.source}", *reasons]
    lines += [f"rejected sample {r.source}: {r.reason}" for r in candidate.rejected]
    atomic_write_text(target / "reasons.txt", "\n".join(lines) + "\n")
    return target


def quarantine_source(source: str | tuple[str, str], reason: str, quarantine_dir: Path,
                      max_bytes: int, workspace: Path) -> Path | None:
    """A source that could not be read at all: copy its files (if small enough) with the reason.

    Nothing is copied from a missing path, or from a path inside (or holding) the workspace.
    """
    paths = [Path(p) for p in (source if isinstance(source, tuple) else (source,))]
    root = workspace.resolve()
    if not all(p.exists() for p in paths) or any(
            p.resolve().is_relative_to(root) or root.is_relative_to(p.resolve()) for p in paths):
        return None
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*"))
                    if f.is_file() and not f.is_symlink()})
    path = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    stamp = "".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    target = quarantine_dir / ("source-" + hashlib.sha256(stamp.encode()).hexdigest()[:12])
    target.mkdir(parents=True, exist_ok=True)
    if sum(p.stat().st_size for p in files) <= max_bytes:
        for f in files:
            dest = target / "files" / (f.relative_to(path) if path else f.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest, follow_symlinks=False)
    atomic_write_text(target / "reasons.txt", f"source: {source}\n{reason}\n")
    return target
