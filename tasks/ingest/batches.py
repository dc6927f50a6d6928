"""The dataset's batches: <id>/, the pixels as .npy shards (tasks.data), and <id>.csv, the
per-sample metadata in the same order; a source read and deduplicated into a Candidate, then
landed. Samples are stored in an order shuffled by the batch's id, so any run of a shard is a
fair sample of the batch (the readers' block shuffle relies on it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes
from tasks.ingest.names import csv_cell, from_csv_cell
from tasks.ingest.reading import Batch, ReadLog, Rejected, Shape
from tasks.ingest.source import read_labelled

if TYPE_CHECKING:  # pandas costs 0.6 s to import: loaded where a table is built or read
    import pandas as pd

META_COLUMNS = ["content_hash", "label", "height", "width", "channels",
                "pixel_min", "pixel_max", "pixel_mean", "source", "batch_id", "decoded_as"]
TEXT_COLUMNS = ("label", "source", "decoded_as")  # escaped for spreadsheets in the CSV


def content_hash(image: np.ndarray) -> str:
    """sha256 of the shape and the pixels: equal images, equal hash, whatever the file."""
    return hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


def metadata_table(batch: Batch, hashes: list[str], batch_id: str) -> pd.DataFrame:
    """One row per sample: hash, label, shape, pixel statistics, source (the pixels walked in
    chunks: a staged batch is never read whole)."""
    import pandas as pd

    from tasks.data import chunks

    n, c, h, w = batch.x.shape
    if n == 0:
        return pd.DataFrame(columns=META_COLUMNS)
    stats, at = np.empty((n, 3)), 0
    for block in chunks(batch.x):
        flat = block.reshape(len(block), c * h * w)
        stats[at:at + len(block)] = np.c_[flat.min(axis=1), flat.max(axis=1), flat.mean(axis=1)]
        at += len(block)
    return pd.DataFrame({
        "content_hash": hashes, "label": batch.labels.astype(str),
        "height": h, "width": w, "channels": c,
        "pixel_min": stats[:, 0].astype(np.uint8), "pixel_max": stats[:, 1].astype(np.uint8),
        "pixel_mean": stats[:, 2].round(4),
        "source": batch.sources, "batch_id": batch_id,
        "decoded_as": batch.decoded or ["as stored"] * n,
    }, columns=META_COLUMNS)


def metadata_csv(meta: pd.DataFrame) -> bytes:
    """The table as CSV; a text cell starting with = + - @ gets a ' so spreadsheets show it."""
    out = meta.copy()
    for column in TEXT_COLUMNS:
        if column in out:
            out[column] = out[column].astype(str).map(csv_cell)
    return out.to_csv(index=False).encode()


def read_metadata(batches_dir: Path) -> pd.DataFrame:
    """All batches' metadata rows, oldest batch first."""
    import pandas as pd

    files = sorted(batches_dir.glob("*.csv")) if batches_dir.exists() else []
    if not files:
        return pd.DataFrame(columns=META_COLUMNS)
    return pd.concat([read_metadata_file(f) for f in files], ignore_index=True)


def read_metadata_file(path: Path) -> pd.DataFrame:
    """One batch's metadata rows, text cells unescaped."""
    import pandas as pd

    meta = pd.read_csv(path, dtype={"label": str, "content_hash": str, "batch_id": str,
                                    "source": str, "decoded_as": str}, keep_default_na=False)
    for column in TEXT_COLUMNS:
        if column in meta:
            meta[column] = meta[column].fillna("").astype(str).map(from_csv_cell)
    return meta


def dataset_shape(meta: pd.DataFrame) -> Shape | None:
    """(C, H, W) of the dataset's samples (its first batch's), None when it has none."""
    if meta.empty or not {"channels", "height", "width"} <= set(meta.columns):
        return None
    row = meta.iloc[0]
    return int(row["channels"]), int(row["height"]), int(row["width"])


def has_samples(batches_dir: Path) -> bool:
    """Whether any batch's metadata holds a row (without reading the tables)."""
    for path in batches_dir.glob("*.csv") if batches_dir.exists() else []:
        with path.open() as fh:
            if fh.readline() and fh.readline().strip():
                return True
    return False


def batch_images(batches_dir: Path, meta: pd.DataFrame):
    """The stores of the batches in `meta` (in order) and each row's store and row in it."""
    from tasks.data import ShardStore

    if meta.empty:
        raise BadInputError(f"{batches_dir}: no data batches; run `evergreen ingest SRC` first")
    ids = list(dict.fromkeys(meta["batch_id"]))
    stores = [ShardStore(batches_dir / b) for b in ids]
    for b, store in zip(ids, stores, strict=True):
        rows = int((meta["batch_id"] == b).sum())
        if len(store) != rows:
            raise BadInputError(f"{batches_dir / b}: {len(store)} images in the shards, "
                                f"{rows} rows in {b}.csv; the batch is damaged")
    shapes = {s.image_shape for s in stores}
    if len(shapes) > 1:
        raise BadInputError(f"{batches_dir}: batches hold images of different shapes {shapes}")
    store_of = meta["batch_id"].map({b: i for i, b in enumerate(ids)}).to_numpy(np.int32)
    rows = meta.groupby("batch_id", sort=False).cumcount().to_numpy(np.int64)
    return ids, stores, store_of, rows


def read_batches(batches_dir: Path):
    """Every batch, oldest first: the images (tasks.data.Images, read on demand), the labels
    and the metadata rows, all in the same order."""
    from tasks.data import Images

    meta = read_metadata(batches_dir)
    _, stores, store_of, rows = batch_images(batches_dir, meta)
    return Images(stores, store_of, rows), meta["label"].to_numpy(str), meta


def dedupe(batch: Batch, known: set[str]) -> tuple[Batch, list[str], int, int]:
    """Drop samples repeated inside the batch or already in the dataset (by content hash)."""
    from tasks.data import chunks

    hashes = [content_hash(img) for block in chunks(batch.x) for img in block]
    keep, seen, repeats, present = np.zeros(len(batch), bool), set(), 0, 0
    for i, h in enumerate(hashes):
        if h in known:
            present += 1
        elif h in seen:
            repeats += 1
        else:
            keep[i] = True
            seen.add(h)
    kept = batch if keep.all() else batch.take(keep)  # a copy of every pixel costs seconds
    return kept, [h for h, k in zip(hashes, keep, strict=False) if k], repeats, present


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
    log: ReadLog = field(default_factory=ReadLog)

    @property
    def duplicates(self) -> int:
        return self.repeats + self.present


def batch_id_of(hashes: list[str], labels: np.ndarray) -> str:
    """Content address of a batch: its samples and labels, in any order."""
    pairs = sorted(f"{h}:{y}" for h, y in zip(hashes, labels))
    return hashlib.sha256("".join(pairs).encode()).hexdigest()[:16]


def prepare_batch(source: str | tuple[str, str], cfg: IngestConfig, batches_dir: Path,
                  workspace: Path | None = None, log: ReadLog | None = None,
                  staging: Path | None = None) -> Candidate:
    """Read `source` (an IDX (images, labels) pair, or (image folder, labels CSV)) and drop
    samples already in the dataset or repeated in the batch. Images follow the dataset's
    shape; `log` collects the files opened and skipped, even when the read fails; an image
    folder past ingest.max_batch_pixels is decoded into shards under `staging`."""
    log = log if log is not None else ReadLog()
    dataset = read_metadata(batches_dir)
    batch, rejected = read_labelled(source, cfg, workspace, log, dataset_shape(dataset), staging)
    fresh, hashes, repeats, present = dedupe(batch, set(dataset["content_hash"]))
    batch_id = batch_id_of(hashes, fresh.labels)
    meta = metadata_table(fresh, hashes, batch_id)
    return Candidate(source, fresh, hashes, batch_id, meta, rejected, repeats, present, log)


def stored_order(batch_id: str, n: int) -> np.ndarray:
    """The order a batch's samples are stored in: a permutation seeded by its id."""
    return np.random.default_rng(int(batch_id[:16], 16)).permutation(n)


def land_batch(candidate: Candidate, batches_dir: Path, shard_mb: int = 128) -> None:
    """Write the shards (<id>/), then the metadata (.csv), which marks the batch as landed;
    both in the stored order."""
    order = stored_order(candidate.batch_id, len(candidate.batch))
    store_pixels(candidate.batch.x, order, batches_dir, candidate.batch_id, shard_mb)
    meta = candidate.meta.iloc[order].reset_index(drop=True)
    atomic_write_bytes(batches_dir / f"{candidate.batch_id}.csv", metadata_csv(meta))


def store_pixels(x, order: np.ndarray, batches_dir: Path, batch_id: str, shard_mb: int) -> None:
    """x[order] (an array, or staged Images) as the shards of <id>/, written aside and renamed
    into place whole; one shard's buffer is reused (fresh pages cost more than the copy on
    some VMs)."""
    import shutil

    from tasks.data import ShardWriter

    final, partial = batches_dir / batch_id, batches_dir / f".{batch_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    writer = ShardWriter(partial, batch_id, shard_mb * 2**20)
    per = max(1, shard_mb * 2**20 // max(1, int(np.prod(x.shape[1:]))))
    buf = np.empty((min(per, len(x)), *x.shape[1:]), np.uint8)
    for i in range(0, len(x), per):
        part = buf[:len(order[i:i + per])]
        x.take(order[i:i + per], axis=0, out=part)
        writer.add(part)
        writer.flush()  # before the buffer is refilled
    writer.close()
    shutil.rmtree(final, ignore_errors=True)  # a batch is content-addressed: same id, same data
    partial.replace(final)


def migrate_batches(batches_dir: Path, shard_mb: int = 128) -> list[str]:
    """Batches landed before shards (<id>.npz beside <id>.csv) rewritten as shards, in the
    stored order; the .npz goes once its shards and table are in place. Returns their ids."""
    moved = []
    for packed in sorted(batches_dir.glob("*.npz")) if batches_dir.exists() else []:
        table = packed.with_suffix(".csv")
        if not table.exists():
            continue
        meta = read_metadata_file(table)
        with np.load(packed, allow_pickle=False) as npz:
            x = npz["x"]
        if len(x) != len(meta):
            raise BadInputError(f"{packed}: {len(x)} images for {len(meta)} rows in {table.name}")
        perm = stored_order(packed.stem, len(x))
        store_pixels(x, perm, batches_dir, packed.stem, shard_mb)
        atomic_write_bytes(table, metadata_csv(meta.iloc[perm].reset_index(drop=True)))
        packed.unlink()
        moved.append(packed.stem)
    return moved
