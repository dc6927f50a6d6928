"""Reading a source: 'digits' or a path, its kind found (by name, then by its first bytes) and
handed to the reader of its format (idx, npz, csv_table, folder; archives extracted first).

Whole-source problems (missing, empty, truncated, hostile archives) raise BadInputError
naming the file; per-sample problems (a corrupt image, a bad CSV row) come back as
Rejected, so the caller can apply ingest.on_bad_sample. Every file is opened through
SourceFiles (regular files inside the source only, with a deadline), and every format
checks ingest.max_batch_pixels from its headers before decoding: a file format is refused past
it, an image folder is staged on disk past it when the caller gives a staging folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.archive import extract_archive
from tasks.ingest.csv_table import read_csv_table
from tasks.ingest.decode import SUFFIXES as IMAGE_SUFFIXES
from tasks.ingest.folder import os_file, read_image_folder
from tasks.ingest.idx import idx_pair_of, looks_idx, pair_idx, read_idx_pair
from tasks.ingest.names import Names, display_name
from tasks.ingest.npz import read_npz
from tasks.ingest.reading import Batch, Read, Reading, ReadLog, Rejected, Shape
from tasks.ingest.safe_files import SourceFiles
from tasks.ingest.shape import conform
from tasks.ingest.streams import first_bytes

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DATA_SUFFIXES = (".npz", ".csv", ".zip", ".gz", *TAR_SUFFIXES)
SOURCE_KINDS = ("'digits', an image folder root/<label>/*.png (or images with a labels CSV), "
                "MNIST IDX files, .npz, .csv, or a .zip/.tar(.gz) archive of these")


def read_source(source: str, cfg: IngestConfig, workspace: Path | None = None,
                log: ReadLog | None = None, conform_to: Shape | None = None,
                staging: Path | None = None) -> Read:
    """Read 'digits' or a path (image folder, IDX, NPZ, CSV, zip/tar archive of these).

    Returns the samples read and those refused with their reasons; `log` collects the files
    opened and skipped and the choices made. `workspace` (its root) guards against ingesting
    the workspace's own data/ or models/; `conform_to` is the dataset's (C, H, W); an image
    folder past ingest.max_batch_pixels is decoded into shards under `staging` (None: refused).
    """
    log = log if log is not None else ReadLog()
    if source == "digits":
        reading = Reading(cfg, SourceFiles(Path("/")), Names(Path("/")), log, conform_to)
        return conform(load_digits_batch(), reading, "sklearn digits, 0..16 scaled to 0..255"), []
    path = _checked_path(Path(source).expanduser(), source, workspace)
    real = Path(os.path.realpath(path))
    files = SourceFiles(real if path.is_dir() else real.parent, cfg.read_timeout_s, log.opened)
    names = Names(path) if path.is_dir() else Names(path.parent)
    batch, rejects = _read_path(path, Reading(cfg, files, names, log, conform_to, staging),
                                in_archive=False)
    if len(batch) == 0 and not rejects:
        raise BadInputError(f"{display_name(source)}: empty source: no samples found")
    return batch, rejects


def read_idx(images: Path, labels: Path, cfg: IngestConfig, workspace: Path | None = None,
             log: ReadLog | None = None, conform_to: Shape | None = None) -> Read:
    """An MNIST-format pair given as two paths (raw or gzip): the images and the labels file."""
    log = log if log is not None else ReadLog()
    images = _checked_path(Path(images).expanduser(), str(images), workspace)
    labels = _checked_path(Path(labels).expanduser(), str(labels), workspace)
    reading = Reading(cfg, SourceFiles(Path("/"), cfg.read_timeout_s, log.opened),
                      Names(images.parent), log, conform_to)
    batch = read_idx_pair(images, labels, reading, Names(labels.parent))
    if len(batch) == 0:
        raise BadInputError(f"{display_name(str(images))}: empty source: no samples found")
    return batch, []


def read_labelled(source: str | tuple[str, str], cfg: IngestConfig, workspace: Path | None,
                  log: ReadLog, shape: Shape | None,
                  staging: Path | None = None) -> tuple[Batch, list[Rejected]]:
    """Read a labelled source as ingest does: a path, (image folder, labels CSV) or (IDX images,
    IDX labels); images conform to `shape` (C, H, W) when given; zero-padded labels as integers;
    a large image folder is staged under `staging` (see read_source)."""
    if isinstance(source, tuple) and Path(source[0]).expanduser().is_dir():
        cfg = cfg.model_copy(update={"labels_csv": source[1]})
        batch, rejected = read_source(source[0], cfg, workspace, log, shape, staging)
    elif isinstance(source, tuple):
        batch, rejected = read_idx(Path(source[0]), Path(source[1]), cfg, workspace, log, shape)
    else:
        batch, rejected = read_source(source, cfg, workspace, log, shape, staging)
    labels, note = canonical_labels(batch.labels)
    if note:
        batch = Batch(batch.x, labels, batch.sources, batch.decoded)
        log.notes.append(note)
    return batch, rejected


def canonical_labels(labels: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Zero-padded numbers as plain integers ('00016' -> '16'), so class folders named
    00000..00042 and a CSV's ClassId 0..42 name the same classes; unchanged when that
    would merge two labels."""
    text = [str(v) for v in labels.tolist()]
    if not text or not all(t.isdigit() and t.isascii() for t in text) or \
            not any(len(t) > 1 and t[0] == "0" for t in text):
        return labels, None
    plain = {t: str(int(t)) for t in set(text)}
    if len(set(plain.values())) < len(plain):
        return labels, None
    example = next(t for t in plain if plain[t] != t)
    return (np.array([plain[t] for t in text], dtype=str),
            f"labels: zero-padded numbers read as integers ({example} -> {plain[example]})")


def load_digits_batch() -> Batch:
    """scikit-learn's bundled 8x8 digits (0..16 levels), rescaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(str)
    return Batch(x, labels, [f"sklearn:digits[{i}]" for i in range(len(x))])


def _checked_path(path: Path, source: str, workspace: Path | None) -> Path:
    """The path when it exists, is a file or folder, and lies outside the workspace's data."""
    shown = display_name(source)
    if not path.exists():
        if os.path.lexists(path):
            raise BadInputError(f"{shown}: a broken or looping symlink")
        raise BadInputError(f"{shown}: no such file or directory (expected {SOURCE_KINDS})")
    if not (path.is_dir() or path.is_file()):
        raise BadInputError(f"{shown}: not a regular file or folder (a FIFO, socket or device); "
                            "refused")
    if workspace is None:
        return path
    real = path.resolve()
    for folder in ("data", "models"):
        guarded = (Path(workspace) / folder).resolve()
        if real.is_relative_to(guarded) or guarded.is_relative_to(real):
            where = "lies inside" if real.is_relative_to(guarded) else "contains"
            raise BadInputError(f"{shown}: {where} the workspace's {folder}/ folder ({guarded}); "
                                "ingest from a copy outside data/ and models/")
    return path


def _read_path(path: Path, reading: Reading, in_archive: bool) -> Read:
    """One file (by its kind) or folder of the source; archives are extracted first."""
    if path.is_dir():
        return _read_dir(path, reading, in_archive)
    names = reading.names
    reading.files.check(path, names(path))  # a link out or a special file is refused here
    kind = _file_kind(path, reading)
    if kind in ("zip", "tar"):
        if in_archive:
            raise BadInputError(f"{names(path)}: an archive inside an archive is not supported; "
                                "extract the outer one first")
        return _read_archive(path, reading, kind)
    if kind == "npz":
        return read_npz(path, reading)
    if kind == "csv":
        return read_csv_table(path, reading)
    return read_idx_pair(*idx_pair_of(path, reading), reading), []


def _read_dir(root: Path, reading: Reading, in_archive: bool) -> Read:
    """IDX files if any are here, a lone data file (.npz, .csv, ...), else an image folder."""
    entries = sorted(root.iterdir())
    visible = [p for p in entries if not os_file(p.name)]
    files = [p for p in visible if p.is_file() and reading.files.inside(p)]
    idx = [p for p in files if looks_idx(p, reading)]
    if idx:
        _name_skipped(entries, set(idx), reading)
        batches = [read_idx_pair(images, labels, reading) for images, labels in pair_idx(idx, reading)]
        if len({b.x.shape[1:] for b in batches}) > 1:
            raise BadInputError(f"{reading.names(root)}: IDX files hold images of different sizes "
                                f"{[b.x.shape[2:] for b in batches]}; ingest them one by one")
        return Batch(np.concatenate([b.x for b in batches]), np.concatenate([b.labels for b in batches]),
                     [s for b in batches for s in b.sources], [d for b in batches for d in b.decoded]), []
    data = [p for p in files if p.name.lower().endswith(DATA_SUFFIXES)]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(data) == 1 and not images and not any(p.is_dir() for p in visible):
        _name_skipped(entries, {data[0]}, reading)
        return _read_path(data[0], reading, in_archive)
    return read_image_folder(root, reading)


def _name_skipped(entries: list[Path], read: set[Path], reading: Reading) -> None:
    """Log each entry of a folder that was not read, with why."""
    for p in entries:
        if p not in read:
            why = "hidden or OS metadata file" if os_file(p.name) else "not a data file"
            reading.log.skipped.append(Rejected(reading.names(p), why))


def _file_kind(path: Path, reading: Reading) -> str:
    """zip, tar, npz, csv or idx: from the name, then from the first bytes."""
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".csv"):
        return "csv"
    head = first_bytes(path, reading)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or name.endswith(".zip"):
        return "zip"
    if head[257:262] == b"ustar" or name.endswith(TAR_SUFFIXES):
        return "tar"
    if looks_idx(path, reading, head):
        return "idx"
    raise BadInputError(f"{reading.names(path)}: not a recognised source file (expected {SOURCE_KINDS})")


def _read_archive(path: Path, reading: Reading, kind: str) -> Read:
    """Extract into a private temporary folder, then read what it holds."""
    shown, cfg = reading.names(path), reading.cfg
    with tempfile.TemporaryDirectory(prefix="evergreen-archive-") as tmp:
        root = Path(tmp).resolve()
        with reading.files.open(path, shown) as fh:
            extract_archive(fh, root, kind, cfg, shown)
        return _read_path(_descend(root), reading.inside(root, f"{shown}:"), in_archive=True)


def _descend(root: Path) -> Path:
    """Into a lone top-level folder (archive/mnist/7/x.png), but not into a label folder."""
    while True:
        entries = [p for p in root.iterdir() if not os_file(p.name)]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            return root
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries[0].iterdir()):
            return root
        root = entries[0]
