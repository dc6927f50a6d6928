"""Ingest: read a source into a packed, content-addressed batch plus per-sample metadata."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes, atomic_write_text
from tasks.ingest.reading import Batch, ReadLog, Rejected, Shape, canonical_labels
from tasks.ingest.safe_files import Opened, SourceFiles, csv_cell, display_name, from_csv_cell
from tasks.ingest.source import read_idx, read_source

if TYPE_CHECKING:  # pandas costs 0.6 s to import: loaded where a table is built or read
    import pandas as pd

META_COLUMNS = ["content_hash", "label", "height", "width", "channels",
                "pixel_min", "pixel_max", "pixel_mean", "source", "batch_id", "decoded_as"]
TEXT_COLUMNS = ("label", "source", "decoded_as")  # escaped for spreadsheets in the CSV


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
    frames = [pd.read_csv(f, dtype={"label": str, "content_hash": str, "batch_id": str,
                                   "source": str, "decoded_as": str}, keep_default_na=False)
              for f in files]
    if not frames:
        return pd.DataFrame(columns=META_COLUMNS)
    meta = pd.concat(frames, ignore_index=True)
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
    log: ReadLog = field(default_factory=ReadLog)

    @property
    def duplicates(self) -> int:
        return self.repeats + self.present


def batch_id_of(hashes: list[str], labels: np.ndarray) -> str:
    """Content address of a batch: its samples and labels, in any order."""
    pairs = sorted(f"{h}:{y}" for h, y in zip(hashes, labels))
    return hashlib.sha256("".join(pairs).encode()).hexdigest()[:16]


def prepare_batch(source: str | tuple[str, str], cfg: IngestConfig, batches_dir: Path,
                  workspace: Path | None = None, log: ReadLog | None = None) -> Candidate:
    """Read `source` (an IDX (images, labels) pair, or (image folder, labels CSV)) and drop
    samples already in the dataset or repeated in the batch. Images follow the dataset's
    shape; `log` collects the files opened and skipped, even when the read fails."""
    log = log if log is not None else ReadLog()
    dataset = read_metadata(batches_dir)
    batch, rejected = read_labelled(source, cfg, workspace, log, dataset_shape(dataset))
    fresh, hashes, repeats, present = dedupe(batch, set(dataset["content_hash"]))
    batch_id = batch_id_of(hashes, fresh.labels)
    meta = metadata_table(fresh, hashes, batch_id)
    return Candidate(source, fresh, hashes, batch_id, meta, rejected, repeats, present, log)


def read_labelled(source: str | tuple[str, str], cfg: IngestConfig, workspace: Path | None,
                  log: ReadLog, shape: Shape | None) -> tuple[Batch, list[Rejected]]:
    """Read a labelled source as ingest does: a path, (image folder, labels CSV) or (IDX images,
    IDX labels); images conform to `shape` (C, H, W) when given; zero-padded labels as integers."""
    if isinstance(source, tuple) and Path(source[0]).expanduser().is_dir():
        cfg = cfg.model_copy(update={"labels_csv": source[1]})
        batch, rejected = read_source(source[0], cfg, workspace, log, shape)
    elif isinstance(source, tuple):
        batch, rejected = read_idx(Path(source[0]), Path(source[1]), cfg, workspace, log, shape)
    else:
        batch, rejected = read_source(source, cfg, workspace, log, shape)
    labels, note = canonical_labels(batch.labels)
    if note:
        batch = Batch(batch.x, labels, batch.sources, batch.decoded)
        log.notes.append(note)
    return batch, rejected


def pack_shard(batch: Batch) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=batch.x, labels=batch.labels.astype(str))
    return buf.getvalue()


def land_batch(candidate: Candidate, batches_dir: Path) -> None:
    """Write the shard (.npz), then the metadata (.csv), which marks the batch as landed."""
    atomic_write_bytes(batches_dir / f"{candidate.batch_id}.npz", pack_shard(candidate.batch))
    atomic_write_bytes(batches_dir / f"{candidate.batch_id}.csv", metadata_csv(candidate.meta))


def shown_source(source: str | tuple[str, str]) -> str:
    """A source as shown in messages and records: escaped, a pair joined by ' + '."""
    return " + ".join(display_name(str(s)) for s in (source if isinstance(source, tuple) else (source,)))


def private_folder(quarantine_dir: Path, name: str) -> Path:
    """quarantine/<name>/, mode 0700 (the workspace's .gitignore lists data/quarantine/)."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / name
    target.mkdir(mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    return target


def quarantine_candidate(candidate: Candidate, reasons: list[str], quarantine_dir: Path) -> Path:
    """Keep a rejected batch whole in quarantine/<batch-id>/ with its reasons; never delete it."""
    target = private_folder(quarantine_dir, candidate.batch_id)
    if len(candidate.batch):
        atomic_write_bytes(target / "batch.npz", pack_shard(candidate.batch), private=True)
        atomic_write_bytes(target / "metadata.csv", metadata_csv(candidate.meta), private=True)
    lines = [f"source: {shown_source(candidate.source)}", *reasons]
    lines += [f"rejected sample {r.source}: {r.reason}" for r in candidate.rejected]
    atomic_write_text(target / "reasons.txt", "\n".join(lines) + "\n", private=True)
    return target


def quarantine_source(source: str | tuple[str, str], reason: str, quarantine_dir: Path,
                      max_bytes: int, opened: list[Opened]) -> Path | None:
    """A source that could not be read: a manifest of the files ingest opened (size, sha256)
    and, when they total at most max_bytes, copies of exactly those files (mode 0600).

    Nothing else is copied: not the rest of the folder, not hidden files, not files a link
    points to outside the source. Nothing at all when no file was opened.
    """
    files = list({o.path: o for o in opened}.values())
    if not files:
        return None
    stamp = "".join(f"{o.path}:{o.size}" for o in files) + reason
    target = private_folder(quarantine_dir, "source-" + hashlib.sha256(
        stamp.encode("utf-8", "surrogateescape")).hexdigest()[:12])
    copy = sum(o.size for o in files) <= max_bytes
    rows = [_quarantine_file(o, i, target / "files" if copy else None) for i, o in enumerate(files)]
    atomic_write_text(target / "manifest.json", json.dumps(
        {"source": shown_source(source), "reason": reason, "files": rows}, indent=2) + "\n",
        private=True)
    atomic_write_text(target / "reasons.txt", f"source: {shown_source(source)}\n{reason}\n",
                      private=True)
    return target


def _quarantine_file(opened: Opened, index: int, folder: Path | None) -> dict:
    """Hash (and copy into folder, streamed) one file ingest opened, through the same safe
    opener; at most the size it had when read."""
    files = SourceFiles(opened.path.parent)
    name = None
    if folder is not None:
        parts = PurePosixPath(opened.shown).parts
        name = opened.shown if parts and not opened.shown.startswith("/") and ".." not in parts \
            and ":" not in opened.shown else f"{index:05d}-{display_name(opened.path.name)}"
    try:
        with files.open(opened.path, opened.shown) as fh:
            digest = _copy_private(fh, opened.size, folder / name if name else None)
    except BadInputError as exc:  # gone or changed since: say so, copy nothing
        return {"file": opened.shown, "size": opened.size, "sha256": None, "copied": None,
                "note": str(exc)}
    return {"file": opened.shown, "size": opened.size, "sha256": digest, "copied": name}


def _copy_private(src, size: int, dest: Path | None) -> str:
    """sha256 of the first `size` bytes of src, written to dest (0600, folders 0700) if given."""
    digest = hashlib.sha256()
    out, tmp = None, None
    if dest is not None:
        for parent in reversed(dest.parents):  # the folders it needs, private like the file
            if not parent.exists():
                parent.mkdir(mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:50]}.", suffix=".tmp")
        out = os.fdopen(fd, "wb")
    try:
        left = size
        while left > 0 and (chunk := src.read(min(1 << 20, left))):
            digest.update(chunk)
            left -= len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            os.replace(tmp, dest)
    except BaseException:
        if out is not None:
            out.close()
            Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()
