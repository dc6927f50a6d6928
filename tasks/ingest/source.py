"""Readers: every source format, read safely into a Batch plus the samples refused.

Whole-source problems (missing, empty, truncated, hostile archives) raise BadInputError
naming the file; per-sample problems (a corrupt image, a bad CSV row) come back as
Rejected, so the caller can apply ingest.on_bad_sample. Every file is opened through
SourceFiles (regular files inside the source only, with a deadline), and every format
checks ingest.max_batch_pixels from its headers before decoding.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import os
import re
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.decode import SUFFIXES as IMAGE_SUFFIXES
from tasks.ingest.decode import fit_array
from tasks.ingest.folder import os_file, read_image_folder
from tasks.ingest.labels_csv import MAX_LABEL
from tasks.ingest.reading import Batch, Names, Reading, ReadLog, Rejected, Shape, choose_target, to_channels
from tasks.ingest.safe_files import SourceFiles, display_name, text_lines

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DATA_SUFFIXES = (".npz", ".csv", ".zip", ".gz", *TAR_SUFFIXES)
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
SOURCE_KINDS = ("'digits', an image folder root/<label>/*.png (or images with a labels CSV), "
                "MNIST IDX files, .npz, .csv, or a .zip/.tar(.gz) archive of these")

Read = tuple[Batch, list[Rejected]]


# --- entry points ---------------------------------------------------------------------

def read_source(source: str, cfg: IngestConfig, workspace: Path | None = None,
                log: ReadLog | None = None, conform_to: Shape | None = None) -> Read:
    """Read 'digits' or a path (image folder, IDX, NPZ, CSV, zip/tar archive of these).

    Returns the samples read and those refused with their reasons; `log` collects the files
    opened and skipped and the choices made. `workspace` (its root) guards against ingesting
    the workspace's own data/ or models/; `conform_to` is the dataset's (C, H, W).
    """
    log = log if log is not None else ReadLog()
    if source == "digits":
        reading = Reading(cfg, SourceFiles(Path("/")), Names(Path("/")), log, conform_to)
        return conform(load_digits_batch(), reading, "sklearn digits, 0..16 scaled to 0..255"), []
    path = _checked_path(Path(source).expanduser(), source, workspace)
    real = Path(os.path.realpath(path))
    files = SourceFiles(real if path.is_dir() else real.parent, cfg.read_timeout_s, log.opened)
    names = Names(path) if path.is_dir() else Names(path.parent)
    batch, rejects = _read_path(path, Reading(cfg, files, names, log, conform_to), in_archive=False)
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
    batch = _read_idx_pair(images, labels, reading, Names(labels.parent))
    if len(batch) == 0:
        raise BadInputError(f"{display_name(str(images))}: empty source: no samples found")
    return batch, []


def load_digits_batch() -> Batch:
    """scikit-learn's bundled 8x8 digits (0..16 levels), rescaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(str)
    return Batch(x, labels, [f"sklearn:digits[{i}]" for i in range(len(x))])


def _checked_path(path: Path, source: str, workspace: Path | None) -> Path:
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
        return _read_npz(path, reading)
    if kind == "csv":
        return _read_csv(path, reading)
    return _read_idx_pair(*_idx_pair_of(path, reading), reading), []


def _read_dir(root: Path, reading: Reading, in_archive: bool) -> Read:
    """IDX files if any are here, a lone data file (.npz, .csv, ...), else an image folder."""
    entries = sorted(root.iterdir())
    visible = [p for p in entries if not os_file(p.name)]
    files = [p for p in visible if p.is_file() and reading.files.inside(p)]
    idx = [p for p in files if _looks_idx(p, reading)]
    if idx:
        _name_skipped(entries, set(idx), reading)
        batches = [_read_idx_pair(images, labels, reading) for images, labels in _pair_idx(idx, reading)]
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
    for p in entries:
        if p not in read:
            why = "hidden or OS metadata file" if os_file(p.name) else "not a data file"
            reading.log.skipped.append(Rejected(reading.names(p), why))


def _head(path: Path, reading: Reading, n: int = 512) -> bytes:
    """The first bytes of a file, decompressed if it is gzip (raw if the stream is corrupt)."""
    with reading.files.open(path, reading.names(path), record=False) as fh:  # a look at its kind
        raw = fh.read(n)
        if raw[:2] != GZIP_MAGIC:
            return raw
        fh.seek(0)
        try:
            with gzip.GzipFile(fileobj=fh) as gz:
                return gz.read(n)
        except (OSError, EOFError, zlib.error):
            return raw


def _file_kind(path: Path, reading: Reading) -> str:
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".csv"):
        return "csv"
    head = _head(path, reading)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or name.endswith(".zip"):
        return "zip"
    if head[257:262] == b"ustar" or name.endswith(TAR_SUFFIXES):
        return "tar"
    if _looks_idx(path, reading, head):
        return "idx"
    raise BadInputError(f"{reading.names(path)}: not a recognised source file (expected {SOURCE_KINDS})")


# --- IDX ------------------------------------------------------------------------------

def _looks_idx(path: Path, reading: Reading, head: bytes | None = None) -> bool:
    if "idx" in path.name.lower() or "ubyte" in path.name.lower():
        return True
    head = _head(path, reading, 4) if head is None else head
    return head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03")


def _idx_ndim(path: Path, reading: Reading) -> int | None:
    """3 for an images file, 1 for labels: from the magic number, else from the name."""
    head = _head(path, reading, 4)
    if head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03"):  # a cut-short file may end at 3
        return head[3]
    name = path.name.lower()
    return 3 if ("idx3" in name or "images" in name) else 1 if ("idx1" in name or "labels" in name) else None


def _labels_name(images_name: str) -> str:
    return images_name.replace("idx3", "idx1").replace("images", "labels")


def _pair_idx(files: list[Path], reading: Reading) -> list[tuple[Path, Path]]:
    """(images, labels) pairs: the only two files, or matched by name (train-*, t10k-*)."""
    kinds = {p: _idx_ndim(p, reading) for p in files}
    images = [p for p in files if kinds[p] == 3]
    labels = {p.name: p for p in files if kinds[p] == 1}
    if len(images) == 1 and len(labels) == 1 and len(files) == 2:
        return [(images[0], next(iter(labels.values())))]
    pairs = [(p, labels.pop(_labels_name(p.name))) for p in images if _labels_name(p.name) in labels]
    unpaired = [display_name(p.name) for p in files if p not in {q for pair in pairs for q in pair}]
    if unpaired or not pairs:
        raise BadInputError(
            f"{reading.names(files[0].parent)}: cannot pair IDX images (idx3) and labels (idx1) "
            f"files: {unpaired or [display_name(p.name) for p in files]} left over; name them like "
            "train-images-idx3-ubyte / train-labels-idx1-ubyte")
    return pairs


def _idx_pair_of(images: Path, reading: Reading) -> tuple[Path, Path]:
    """The labels file next to an images file, found by name."""
    shown = reading.names(images)
    if _idx_ndim(images, reading) == 1:
        raise BadInputError(f"{shown}: is an IDX labels file; give the images file or "
                            "the folder holding both")
    name = _labels_name(images.name)
    if name == images.name or not (images.parent / name).is_file():
        raise BadInputError(f"{shown}: no matching IDX labels file next to it "
                            f"(looked for {display_name(name)})")
    return images, images.parent / name


@contextmanager
def _open_maybe_gz(path: Path, reading: Reading, shown: str) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped as they are read when it starts with the gzip magic."""
    with reading.files.open(path, shown) as raw:
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        yield _Gunzip(raw) if gz else raw


class _Gunzip:
    """A gzip stream read with zlib, so one cut short still yields every byte it holds."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.inflate, self.tail = raw, zlib.decompressobj(31), b""

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.inflate.eof:  # another member may follow (concatenated gzip files)
                self.tail, self.inflate = self.inflate.unused_data, zlib.decompressobj(31)
            data = self.inflate.unconsumed_tail or self.tail or self.raw.read(CHUNK)
            self.tail = b""
            if not data:  # the file ends: what zlib still holds, then stop
                out += self.inflate.flush()[: n - len(out)]
                break
            out += self.inflate.decompress(data, n - len(out))
        return bytes(out)


def _read_upto(fh: IO[bytes], n: int, shown: str) -> bytearray:
    """At most n bytes, in chunks grown into one buffer: a header's claim never sizes an
    allocation by itself, and the data is held once (not as chunks and a joined copy)."""
    buf = bytearray()
    try:
        while len(buf) < n:
            chunk = fh.read(min(CHUNK, n - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (OSError, zlib.error) as exc:
        raise BadInputError(f"{shown}: corrupt gzip stream: {exc}") from None
    return buf


def _idx_dims(head: bytes, ndim: int, shown: str) -> tuple[int, ...]:
    if len(head) < 4 + 4 * ndim or head[:3] != b"\0\0\x08" or head[3] != ndim:
        raise BadInputError(
            f"{shown}: not an IDX file of unsigned bytes with {ndim} dimensions "
            f"(magic {head[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if 0 in dims[1:]:
        raise BadInputError(f"{shown}: IDX header says images of {dims[1]}x{dims[2]}: no pixels")
    return dims


def read_idx_array(path: Path, ndim: int, reading: Reading, shown: str) -> np.ndarray:
    """One MNIST-format IDX file of unsigned bytes with `ndim` dimensions (raw or gzip);
    the header's counts are checked against the limits before the payload is read."""
    cfg = reading.cfg
    with _open_maybe_gz(path, reading, shown) as fh:
        dims = _idx_dims(_read_upto(fh, 4 + 4 * ndim, shown), ndim, shown)
        what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels"
        unit = "pixels" if ndim == 3 else "labels"
        expected = math.prod(dims)
        if ndim == 3 and dims[1] * dims[2] > cfg.max_image_pixels:
            raise BadInputError(f"{shown}: header says images of {dims[1]}x{dims[2]} pixels "
                                f"(> ingest.max_image_pixels {cfg.max_image_pixels})")
        if ndim == 3:
            reading.budget(expected, f"header says {what}", shown)
        if expected > cfg.max_archive_bytes:
            raise BadInputError(f"{shown}: header says {what} ({expected} bytes), more than "
                                f"ingest.max_archive_bytes {cfg.max_archive_bytes}")
        payload = _read_upto(fh, expected + 1, shown)
    if len(payload) < expected:
        raise BadInputError(f"{shown}: truncated IDX: header says {what}, "
                            f"found {len(payload)} bytes of {unit}")
    if len(payload) > expected:
        raise BadInputError(f"{shown}: IDX size mismatch: header says {what}, found more than "
                            f"{expected} bytes of {unit} (trailing data)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _read_idx_pair(images: Path, labels: Path, reading: Reading,
                   label_names: Names | None = None) -> Batch:
    shown, shown_labels = reading.names(images), (label_names or reading.names)(labels)
    x = read_idx_array(images, 3, reading, shown)  # its header is checked against the limits first
    y = read_idx_array(labels, 1, reading, shown_labels)
    if len(x) != len(y):
        raise BadInputError(f"{shown_labels}: {len(y)} labels for {len(x)} images in {shown}")
    sources = [f"{shown}[{i}]" for i in range(len(x))]
    return conform(Batch(np.ascontiguousarray(x[:, None]), y.astype(str), sources), reading, "IDX uint8")


# --- NPZ ------------------------------------------------------------------------------

NPZ_CHUNK_BYTES = 64 << 20  # rows of a large array are converted this many bytes at a time


def _npy_header(fh: IO[bytes], key: str, cfg: IngestConfig, shown: str) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran order, dtype) from the .npy header; object and oversized arrays refused."""
    try:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fh)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises almost anything
        raise BadInputError(f"{shown}: array {key!r} has a malformed .npy header "
                            f"({type(exc).__name__})") from None
    if dtype.hasobject:
        raise BadInputError(f"{shown}: array {key!r} holds Python objects (dtype {dtype}); refused "
                            "because loading it would unpickle (run) code; save numeric arrays")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cfg.max_archive_bytes:
        raise BadInputError(f"{shown}: array {key!r} of shape {shape} is {nbytes} bytes, more "
                            f"than ingest.max_archive_bytes {cfg.max_archive_bytes}")
    return shape, fortran, dtype


def _npz_members(zf: zipfile.ZipFile, shown: str) -> tuple[str, str]:
    members = {m[:-4]: m for m in zf.namelist() if m.endswith(".npy")}
    keys = [next((k for k in alias if k in members), None) for alias in (("x", "images"), ("y", "labels"))]
    if None in keys:
        found = sorted(display_name(m) for m in members)[:10]
        raise BadInputError(f"{shown}: expected arrays 'x' (or 'images') and 'y' (or "
                            f"'labels'), found {found or 'none'}")
    return members[keys[0]], members[keys[1]]


def _npy_rows(zf: zipfile.ZipFile, member: str, key: str, reading: Reading,
              shown: str) -> Iterator[np.ndarray]:
    """The array's rows (samples), a bounded number of bytes at a time."""
    with zf.open(member) as fh:
        shape, fortran, dtype = _npy_header(fh, key, reading.cfg, shown)
        if fortran or len(shape) == 0:  # rare: read whole (bounded by max_archive_bytes)
            fh.seek(0)
            yield np.lib.format.read_array(fh, allow_pickle=False)
            return
        row = math.prod(shape[1:]) * dtype.itemsize
        step = max(1, NPZ_CHUNK_BYTES // max(row, 1))
        for start in range(0, shape[0], step):
            n = min(step, shape[0] - start)
            data = _read_upto(fh, n * row, shown)
            if len(data) < n * row:
                raise BadInputError(f"{shown}: array {key!r} is truncated")
            yield np.frombuffer(data, dtype=dtype).reshape(n, *shape[1:])


def _load_npz(path: Path, reading: Reading, shown: str) -> tuple[np.ndarray, np.ndarray, list, str]:
    """(uint8 images, labels, per-sample reasons or None, how decoded), converted a chunk of
    rows at a time."""
    try:
        with reading.files.open(path, shown) as raw, zipfile.ZipFile(raw) as zf:
            x_member, y_member = _npz_members(zf, shown)
            with zf.open(y_member) as fh:
                _npy_header(fh, "y", reading.cfg, shown)
            with zf.open(y_member) as fh:
                y = np.lib.format.read_array(fh, allow_pickle=False)
            with zf.open(x_member) as fh:
                shape, _, dtype = _npy_header(fh, "x", reading.cfg, shown)
            _npz_shape(shape, shown)
            side = shape[1:3] if len(shape) == 3 or shape[3] in (1, 3) else shape[2:4]
            if side[0] * side[1] > reading.cfg.max_image_pixels:
                raise BadInputError(f"{shown}: array 'x' holds images of {side[0]}x{side[1]} pixels "
                                    f"(> ingest.max_image_pixels {reading.cfg.max_image_pixels})")
            reading.budget(math.prod(shape), f"array 'x' of shape {shape}", shown)
            if dtype.kind not in "iuf":
                raise BadInputError(f"{shown}: array 'x' has dtype {dtype}; expected integers or floats")
            top = _float_top(_npy_rows(zf, x_member, "x", reading, shown)) if dtype.kind == "f" else 255.0
            chunks = [_to_uint8(rows, top) for rows in _npy_rows(zf, x_member, "x", reading, shown)]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError,
            NotImplementedError, RuntimeError) as exc:  # the last two: unsupported or encrypted zip
        raise BadInputError(f"{shown}: not a readable .npz file: {type(exc).__name__}") from None
    how = f"NPZ {dtype}" + (f", scaled from 0..{top:g}" if dtype != np.uint8 else "")
    if not chunks:
        return np.zeros((0, *shape[1:]), np.uint8), y, [], how
    return np.concatenate([c[0] for c in chunks]), y, [r for c in chunks for r in c[1]], how


def _npz_shape(shape: tuple, shown: str) -> None:
    if len(shape) in (3, 4) and 0 in shape[1:]:
        raise BadInputError(f"{shown}: array 'x' has shape {shape}: images with no pixels")
    if not (len(shape) == 3 or len(shape) == 4 and (shape[3] in (1, 3) or shape[1] in (1, 3))):
        raise BadInputError(f"{shown}: array 'x' has shape {shape}; expected (N, H, W), "
                            "(N, H, W, C) or (N, C, H, W) with C 1 or 3")


def _npz_images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) from (N, H, W), channels-last (N, H, W, C) or channels-first, C in 1, 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    return x


def _npz_labels(y: np.ndarray, n: int, shown: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise BadInputError(f"{shown}: array 'y' has shape {y.shape}; expected ({n},), one label "
                            f"per image in 'x'")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuUS":
        raise BadInputError(f"{shown}: labels 'y' of dtype {y.dtype}; expected integers or strings")
    if y.dtype.kind == "S":  # bytes: UTF-8 where it is, the raw bytes escaped where not
        y = np.array([v.decode("utf-8", "surrogateescape") for v in y.tolist()], dtype=str)
    labels = [display_name(v.strip()) for v in y.astype(str).tolist()]
    bad = next((i for i, v in enumerate(labels) if not v or len(v) > MAX_LABEL), None)
    if bad is not None:
        raise BadInputError(f"{shown}: label {bad} in 'y' is empty or longer than {MAX_LABEL} "
                            "characters")
    return np.array(labels, dtype=str)


def _float_top(chunks: Iterator[np.ndarray]) -> float:
    """1.0 when most samples stay within 1 (images in 0..1), else 255.0."""
    within, total = 0, 0
    for rows in chunks:
        flat = rows.reshape(len(rows), -1)
        hi = np.where(np.isfinite(flat), flat, -np.inf).max(axis=1, initial=-np.inf)
        within += int((hi <= 1.0).sum())
        total += len(rows)
    return 1.0 if total and within / total > 0.5 else 255.0


def _to_uint8(x: np.ndarray, top: float) -> tuple[np.ndarray, list[str | None]]:
    """uint8 pixels and, per sample, why it was refused (None if fine).

    Floats are in 0..`top` (scaled by 255/top); values that round into 0..255 are fine
    (float noise such as 255.00001).
    """
    if x.dtype == np.uint8 or len(x) == 0:
        return x.astype(np.uint8, copy=False), [None] * len(x)
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat).all(axis=1) if x.dtype.kind == "f" else np.ones(len(x), bool)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    scaled = np.round(np.where(finite[:, None], flat, 0).astype(np.float64) * (255.0 / top))
    ok = finite & (scaled.min(axis=1) >= 0) & (scaled.max(axis=1) <= 255)
    reasons = [None if good else "NaN or inf pixel values" if not fin
               else f"pixel values outside 0..{top:g} (min {a:g}, max {b:g})"
               for good, fin, a, b in zip(ok, finite, lo, hi, strict=True)]
    pixels = np.where(ok[:, None], scaled, 0).astype(np.uint8)
    return pixels.reshape(x.shape), reasons


def _read_npz(path: Path, reading: Reading) -> Read:
    """Arrays x (images) and y (labels) from an .npz, loaded without pickle."""
    shown = reading.names(path)
    pixels, y, reasons, how = _load_npz(path, reading, shown)
    labels = _npz_labels(y, len(pixels), shown)
    pixels = _npz_images(pixels)
    keep = np.array([r is None for r in reasons], bool)
    rejects = [Rejected(f"{shown}[{i}]", r) for i, r in enumerate(reasons) if r is not None]
    sources = [f"{shown}[{i}]" for i in np.flatnonzero(keep)]
    return conform(Batch(np.ascontiguousarray(pixels[keep]), labels[keep], sources), reading, how), rejects


# --- CSV ------------------------------------------------------------------------------

def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_layout(first: list[str], label_column: str, shown: str) -> tuple[list[str] | None, int]:
    """(header or None, index of the label column); without a header the label comes first."""
    cells = [c.strip() for c in first]
    if label_column in cells:
        return cells, cells.index(label_column)
    if sum(map(_is_number, cells[1:])) > len(cells[1:]) / 2:
        return None, 0
    raise BadInputError(f"{shown}: the header has no {display_name(label_column)!r} column; "
                        "set ingest.csv_label_column")


def _csv_side(width: int, shown: str) -> int:
    """The image side H from a row width of 1 label + H*H gray pixels."""
    side = math.isqrt(max(width - 1, 0))
    if width < 2 or side * side != width - 1:
        raise BadInputError(f"{shown}: {width} columns = 1 label + {width - 1} pixels, and "
                            f"{width - 1} is not a square H*H (grayscale; e.g. 784 = 28x28)")
    return side


def _csv_problem(cells: list[str], columns: list[str]) -> str | None:
    """Why a row's pixel cells are not integers in 0..255 (the first bad cell), or None."""
    for cell, column in zip(cells, columns, strict=True):
        text = cell.strip()
        shown = display_name(column)
        if not text:
            return f"missing pixel value in column {shown}"
        if not _is_number(text) or not math.isfinite(float(text)):
            return f"non-numeric pixel value in column {shown}"
        value = float(text)
        if not 0 <= value <= 255 or value != int(value):
            return f"pixel value in column {shown} is not an integer in 0..255"
    return None


def _parse_pixels(cells: list[str], columns: list[str]) -> np.ndarray | str:
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        return _csv_problem(cells, columns) or "unreadable pixel values"
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 255).all()
            and (values == np.round(values)).all()):
        return _csv_problem(cells, columns) or "unreadable pixel values"
    return values.astype(np.uint8)


def _read_csv(path: Path, reading: Reading) -> Read:
    """label + H*H pixel columns (Kaggle MNIST layout), header optional; bad rows refused."""
    shown = reading.names(path)
    with reading.files.open(path, shown) as fh:
        reader = csv.reader(text_lines(fh, reading.cfg.max_csv_line_bytes, shown))
        try:
            return _parse_csv(reader, reading, shown)
        except csv.Error as exc:
            raise BadInputError(f"{shown}: line {reader.line_num}: malformed CSV: {exc}") from None


def _parse_csv(reader, reading: Reading, shown: str) -> Read:  # reader: a csv.reader
    first = next((r for r in reader if r), None)
    if first is None:
        raise BadInputError(f"{shown}: empty CSV: no rows")
    header, at = _csv_layout(first, reading.cfg.csv_label_column, shown)
    side, width = _csv_side(len(first), shown), len(first)
    if side * side > reading.cfg.max_image_pixels:
        raise BadInputError(f"{shown}: rows hold images of {side}x{side} pixels "
                            f"(> ingest.max_image_pixels {reading.cfg.max_image_pixels})")
    columns = [c for i, c in enumerate(header or []) if i != at] or [str(i + 1) for i in range(1, width)]
    pixels, labels, sources, rejects = bytearray(), [], [], []  # rows held once, as bytes
    for cells in reader if header else itertools.chain([first], reader):
        if not cells:
            continue
        line = reader.line_num
        if len(cells) != width:
            raise BadInputError(f"{shown}: line {line} has {len(cells)} columns, expected "
                                f"{width} like the {'header' if header else 'first row'}")
        reading.budget((len(labels) + 1) * side * side,
                       f"more than {len(labels)} rows of {side}x{side}", shown)
        label, cells = cells[at].strip(), cells[:at] + cells[at + 1:]
        parsed = (_parse_pixels(cells, columns) if label and len(label) <= MAX_LABEL
                  else "missing label" if not label else f"label longer than {MAX_LABEL} characters")
        if isinstance(parsed, str):
            rejects.append(Rejected(f"{shown}:{line}", f"line {line}: {parsed}"))
        else:
            pixels += parsed.tobytes()
            labels.append(display_name(label))
            sources.append(f"{shown}:{line}")
    x = np.frombuffer(pixels, np.uint8).reshape(-1, 1, side, side)
    return conform(Batch(x, np.array(labels, dtype=str), sources), reading, "CSV 0..255"), rejects


# --- archives -------------------------------------------------------------------------

def _read_archive(path: Path, reading: Reading, kind: str) -> Read:
    """Extract into a private temporary folder, then read what it holds."""
    shown, cfg = reading.names(path), reading.cfg
    with tempfile.TemporaryDirectory(prefix="evergreen-archive-") as tmp:
        root = Path(tmp).resolve()
        with reading.files.open(path, shown) as fh:
            if kind == "zip":
                _extract_zip(fh, root, cfg, shown)
            else:
                _extract_tar(fh, root, cfg, shown)
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


def _member_path(name: str, shown: str) -> PurePosixPath:
    """A member's path inside the archive; absolute paths and '..' refuse the whole archive."""
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or re.match(r"[A-Za-z]:", text) or ".." in parts:
        raise BadInputError(f"{shown}: member {display_name(name)!r} has an absolute path or '..' "
                            "(zip slip); refusing the whole archive, nothing was extracted")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _link_target(member: PurePosixPath, target: str, hard: bool) -> PurePosixPath | None:
    """Where a link lands inside the archive (lexically), or None when it leaves it."""
    text = target.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        return None
    parts: list[str] = []
    for part in ((PurePosixPath() if hard else member.parent) / text).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return PurePosixPath(*parts)


def _check_totals(count: int, size: int, cfg: IngestConfig, shown: str) -> None:
    if count > cfg.max_archive_members:
        raise BadInputError(f"{shown}: more than ingest.max_archive_members "
                            f"{cfg.max_archive_members} members; refused")
    if size > cfg.max_archive_bytes:
        raise BadInputError(f"{shown}: more than ingest.max_archive_bytes {cfg.max_archive_bytes} "
                            "bytes uncompressed; refused")


class _Sink:
    """Writes extracted files under root, counting bytes as they come (headers can lie)."""

    def __init__(self, root: Path, cfg: IngestConfig, shown: str):
        self.root, self.cfg, self.shown, self.written = root, cfg, shown, 0

    def mkdir(self, rel: PurePosixPath) -> None:
        self.root.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)

    def write(self, rel: PurePosixPath, src: IO[bytes]) -> None:
        dest = self.root.joinpath(*rel.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                _check_totals(0, self.written, self.cfg, self.shown)
                out.write(chunk)

    def link(self, rel: PurePosixPath, target: PurePosixPath) -> None:
        """A symlink, made after every file: no file is ever written through one."""
        dest = self.root.joinpath(*rel.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(self.root.joinpath(*target.parts), dest.parent), dest)
        if not SourceFiles(self.root).inside(dest):  # chained links can still escape
            raise BadInputError(f"{self.shown}: member {display_name(rel.as_posix())!r} is a symlink that "
                                "points outside the archive; refused")


def _extract_zip(path: IO[bytes], root: Path, cfg: IngestConfig, shown: str) -> None:
    """Check every member from the central directory, then extract; links come last."""
    sink, links = _Sink(root, cfg, shown), []
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_totals(len(infos), sum(i.file_size for i in infos), cfg, shown)
            plan = [(_member_path(i.filename, shown), i) for i in infos]
            for rel, info in plan:
                if stat.S_ISLNK(info.external_attr >> 16):
                    with zf.open(info) as fh:
                        target = fh.read(4096).decode("utf-8", "replace")
                    links.append((rel, _checked_link(rel, target, False, shown)))
            for rel, info in plan:
                if info.is_dir():
                    sink.mkdir(rel)
                elif rel.parts and not stat.S_ISLNK(info.external_attr >> 16):
                    with zf.open(info) as src:
                        sink.write(rel, src)
            for rel, target in links:
                sink.link(rel, target)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, ValueError,
            NotImplementedError) as exc:
        raise BadInputError(f"{shown}: cannot extract zip archive: {type(exc).__name__}") from None


def _checked_link(rel: PurePosixPath, target: str, hard: bool, shown: str) -> PurePosixPath:
    inside = _link_target(rel, target, hard)
    if inside is None:
        kind = "hardlink" if hard else "symlink"
        raise BadInputError(f"{shown}: member {display_name(rel.as_posix())!r} is a {kind} that "
                            "points outside the archive; refusing the whole archive")
    return inside


def _tar_plan(tf: tarfile.TarFile, cfg: IngestConfig, shown: str) -> list[tuple]:
    """(path, member, link target) for every member, refusing what is unsafe, before extracting."""
    plan, size = [], 0
    for count, m in enumerate(tf, start=1):
        size += max(m.size, 0)
        _check_totals(count, size, cfg, shown)
        rel = _member_path(m.name, shown)
        if m.issym() or m.islnk():
            plan.append((rel, m, _checked_link(rel, m.linkname, m.islnk(), shown)))
        elif m.isreg() or m.isdir():
            plan.append((rel, m, None))
        else:
            raise BadInputError(f"{shown}: member {display_name(m.name)!r} is a device, fifo or "
                                "other special file; only files, folders and links inside are allowed")
    return plan


def _extract_tar(fh: IO[bytes], root: Path, cfg: IngestConfig, shown: str) -> None:
    sink = _Sink(root, cfg, shown)
    try:
        with tarfile.open(fileobj=fh, mode="r:*") as tf:
            plan = _tar_plan(tf, cfg, shown)
            for rel, m, _ in plan:
                if m.isdir():
                    sink.mkdir(rel)
                elif (m.isreg() or m.islnk()) and rel.parts:  # a hardlink: a copy of its target
                    src = tf.extractfile(m)
                    if src is None:
                        raise BadInputError(f"{shown}: member {display_name(m.name)!r} cannot be read")
                    with src:
                        sink.write(rel, src)
            for rel, m, target in plan:
                if m.issym():
                    sink.link(rel, target)
    except (tarfile.TarError, OSError, EOFError, zlib.error, KeyError, RuntimeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BadInputError(f"{shown}: cannot extract tar archive: {why}") from None  # no temp paths


# --- shape and channel policy -----------------------------------------------------------

def conform(batch: Batch, reading: Reading, decoded_as: str) -> Batch:
    """Apply ingest.channels and ingest.image_size to formats that hold arrays (IDX, NPZ, CSV,
    digits); image folders are decoded at their batch's shape already."""
    x, how = batch.x, [decoded_as]
    if len(x):
        target, notes = choose_target([x.shape[2:]], x.shape[1] == 3, reading.cfg, reading.conform_to)
        reading.log.notes += notes
        if x.shape[1] != target.channels:
            how.append("L->RGB" if target.channels == 3 else "RGB->L")
            x = to_channels(x, target.channels)
        if x.shape[2:] != target.size:
            how.append(f"{x.shape[3]}x{x.shape[2]}->{target.size[1]}x{target.size[0]} {target.policy}")
            x = fit_array(x, target)
    return Batch(x, batch.labels, batch.sources, [", ".join(how)] * len(x))
