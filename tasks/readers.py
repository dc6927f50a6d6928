"""Readers: every source format, read safely into a Batch plus the samples refused.

Whole-source problems (missing, empty, truncated, hostile archives) raise BadInputError
naming the file; per-sample problems (a corrupt image, a bad CSV row) come back as
Rejected, so the caller can apply ingest.on_bad_sample.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import stat
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
OTHER_IMAGE_SUFFIXES = {".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".ico"}
PIL_FORMATS = ("PNG", "JPEG", "BMP")  # never let PIL probe other plugins (EPS runs Ghostscript)
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
SOURCE_KINDS = ("'digits', an image folder root/<label>/*.png, MNIST IDX files, .npz, .csv, "
                "or a .zip/.tar(.gz) archive of these")


@dataclass
class Batch:
    """Images as uint8 (N, C, H, W), string labels (N,), and where each sample came from."""

    x: np.ndarray
    labels: np.ndarray
    sources: list[str]

    def __len__(self) -> int:
        return len(self.x)

    def take(self, keep: np.ndarray) -> Batch:
        return Batch(self.x[keep], self.labels[keep], [self.sources[i] for i in np.flatnonzero(keep)])


@dataclass
class Rejected:
    """One sample refused: where it came from and why."""

    source: str  # file, file[index] or file:line
    reason: str


@dataclass(frozen=True)
class _Names:
    """How paths are shown to the user: relative to `base`, behind `prefix` ('a.zip:')."""

    base: Path
    prefix: str = ""

    def __call__(self, path: Path) -> str:
        rel = _relative(path, self.base)
        return self.prefix + rel if rel else self.prefix.rstrip(":") or str(path)


def _relative(path: Path, base: Path) -> str:
    """path relative to base, '/'-separated, '' for base itself (string slicing: pathlib is slow)."""
    text, start = str(path), str(base).rstrip(os.sep) + os.sep
    rel = text[len(start):] if text.startswith(start) else path.relative_to(base).as_posix()
    return "" if rel == "." else rel.replace(os.sep, "/")


Read = tuple[Batch, list[Rejected]]


# --- entry points ---------------------------------------------------------------------

def read_source(source: str, cfg: IngestConfig, workspace: Path | None = None) -> Read:
    """Read 'digits' or a path (image folder, IDX, NPZ, CSV, zip/tar archive of these).

    Returns the samples read and those refused with their reasons. `workspace` (its root)
    guards against ingesting the workspace's own data/ or models/.
    """
    if source == "digits":
        batch, rejects = load_digits_batch(), []
    else:
        path = _checked_path(Path(source).expanduser(), source, workspace)
        names = _Names(path) if path.is_dir() else _Names(path.parent)
        batch, rejects = _read_path(path, cfg, names, in_archive=False)
    if len(batch) == 0 and not rejects:
        raise BadInputError(f"{source}: empty source: no samples found")
    return _conform(batch, cfg), rejects


def read_idx(images: Path, labels: Path, cfg: IngestConfig,
             workspace: Path | None = None) -> Read:
    """An MNIST-format pair given as two paths (raw or gzip): the images and the labels file."""
    images = _checked_path(Path(images).expanduser(), str(images), workspace)
    labels = _checked_path(Path(labels).expanduser(), str(labels), workspace)
    batch = _read_idx_pair(images, labels, cfg, _Names(images.parent), _Names(labels.parent))
    if len(batch) == 0:
        raise BadInputError(f"{images}: empty source: no samples found")
    return _conform(batch, cfg), []


def load_digits_batch() -> Batch:
    """scikit-learn's bundled 8x8 digits (0..16 levels), rescaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(str)
    return Batch(x, labels, [f"sklearn:digits[{i}]" for i in range(len(x))])


def _checked_path(path: Path, source: str, workspace: Path | None) -> Path:
    if not path.exists():
        raise BadInputError(f"{source}: no such file or directory (expected {SOURCE_KINDS})")
    if workspace is None:
        return path
    real = path.resolve()
    for folder in ("data", "models"):
        guarded = (Path(workspace) / folder).resolve()
        if real.is_relative_to(guarded) or guarded.is_relative_to(real):
            where = "lies inside" if real.is_relative_to(guarded) else "contains"
            raise BadInputError(f"{source}: {where} the workspace's {folder}/ folder ({guarded}); "
                                "ingest from a copy outside data/ and models/")
    return path


def _read_path(path: Path, cfg: IngestConfig, names: _Names, in_archive: bool) -> Read:
    if path.is_dir():
        return _read_dir(path, cfg, names, in_archive)
    kind = _file_kind(path, names)
    if kind in ("zip", "tar"):
        if in_archive:
            raise BadInputError(f"{names(path)}: an archive inside an archive is not supported; "
                                "extract the outer one first")
        return _read_archive(path, cfg, names, kind)
    if kind == "npz":
        return _read_npz(path, cfg, names)
    if kind == "csv":
        return _read_csv(path, cfg, names)
    return _read_idx_pair(*_idx_pair_of(path, names), cfg, names), []


def _read_dir(root: Path, cfg: IngestConfig, names: _Names, in_archive: bool) -> Read:
    """IDX files if any are here, a lone data file (.npz, .csv, ...), else an image folder."""
    entries = [p for p in sorted(root.iterdir()) if not _skipped(p.name)]
    files = [p for p in entries if p.is_file()]
    idx = [p for p in files if _looks_idx(p)]
    if idx:
        batches = [_read_idx_pair(images, labels, cfg, names) for images, labels in _pair_idx(idx, names)]
        if len({b.x.shape[1:] for b in batches}) > 1:
            raise BadInputError(f"{names(root)}: IDX files hold images of different sizes "
                                f"{[b.x.shape[2:] for b in batches]}; ingest them one by one")
        return Batch(np.concatenate([b.x for b in batches]), np.concatenate([b.labels for b in batches]),
                     [s for b in batches for s in b.sources]), []
    data = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if len(data) == 1 and not any(p.is_dir() for p in entries):  # a folder around one data file
        return _read_path(data[0], cfg, names, in_archive)
    return _read_image_folder(root, cfg, names)


def _skipped(name: str) -> bool:
    """Hidden files and OS droppings (.DS_Store, __MACOSX/, ._resource forks) are not samples."""
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _head(path: Path, n: int = 512) -> bytes:
    """The first bytes of a file, decompressed if it is gzip (raw if the stream is corrupt)."""
    with path.open("rb") as fh:
        raw = fh.read(n)
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        with gzip.open(path) as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error):
        return raw


def _file_kind(path: Path, names: _Names) -> str:
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".csv"):
        return "csv"
    head = _head(path)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or name.endswith(".zip"):
        return "zip"
    if head[257:262] == b"ustar" or name.endswith(TAR_SUFFIXES):
        return "tar"
    if _looks_idx(path, head):
        return "idx"
    raise BadInputError(f"{names(path)}: not a recognised source file (expected {SOURCE_KINDS})")


# --- IDX ------------------------------------------------------------------------------

def _looks_idx(path: Path, head: bytes | None = None) -> bool:
    if "idx" in path.name.lower() or "ubyte" in path.name.lower():
        return True
    head = _head(path, 4) if head is None else head
    return head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03")


def _idx_ndim(path: Path) -> int | None:
    """3 for an images file, 1 for labels: from the magic number, else from the name."""
    head = _head(path, 4)
    if head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03"):  # a cut-short file may end at 3
        return head[3]
    name = path.name.lower()
    return 3 if ("idx3" in name or "images" in name) else 1 if ("idx1" in name or "labels" in name) else None


def _labels_name(images_name: str) -> str:
    return images_name.replace("idx3", "idx1").replace("images", "labels")


def _pair_idx(files: list[Path], names: _Names) -> list[tuple[Path, Path]]:
    """(images, labels) pairs: the only two files, or matched by name (train-*, t10k-*)."""
    kinds = {p: _idx_ndim(p) for p in files}
    images = [p for p in files if kinds[p] == 3]
    labels = {p.name: p for p in files if kinds[p] == 1}
    if len(images) == 1 and len(labels) == 1 and len(files) == 2:
        return [(images[0], next(iter(labels.values())))]
    pairs = [(p, labels.pop(_labels_name(p.name))) for p in images if _labels_name(p.name) in labels]
    unpaired = [p.name for p in files if p not in {q for pair in pairs for q in pair}]
    if unpaired or not pairs:
        raise BadInputError(
            f"{names(files[0].parent)}: cannot pair IDX images (idx3) and labels (idx1) files: "
            f"{unpaired or [p.name for p in files]} left over; name them like "
            "train-images-idx3-ubyte / train-labels-idx1-ubyte")
    return pairs


def _idx_pair_of(images: Path, names: _Names) -> tuple[Path, Path]:
    """The labels file next to an images file, found by name."""
    if _idx_ndim(images) == 1:
        raise BadInputError(f"{names(images)}: is an IDX labels file; give the images file or "
                            "the folder holding both")
    name = _labels_name(images.name)
    if name == images.name or not (images.parent / name).is_file():
        raise BadInputError(f"{names(images)}: no matching IDX labels file next to it "
                            f"(looked for {name})")
    return images, images.parent / name


@contextmanager
def _open_maybe_gz(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped as they are read when it starts with the gzip magic."""
    with path.open("rb") as raw:
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


def _read_upto(fh: IO[bytes], n: int, shown: str) -> bytes:
    """At most n bytes, in chunks: a header's claim never sizes an allocation by itself."""
    chunks, got = [], 0
    try:
        while got < n:
            chunk = fh.read(min(CHUNK, n - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except (OSError, zlib.error) as exc:
        raise BadInputError(f"{shown}: corrupt gzip stream: {exc}") from None
    return b"".join(chunks)


def read_idx_array(path: Path, ndim: int, max_bytes: int, shown: str) -> np.ndarray:
    """One MNIST-format IDX file of unsigned bytes with `ndim` dimensions (raw or gzip)."""
    with _open_maybe_gz(path) as fh:
        head = _read_upto(fh, 4 + 4 * ndim, shown)
        if len(head) < 4 + 4 * ndim or head[:3] != b"\0\0\x08" or head[3] != ndim:
            raise BadInputError(
                f"{shown}: not an IDX file of unsigned bytes with {ndim} dimensions "
                f"(magic {head[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
        dims = struct.unpack(f">{ndim}I", head[4:])
        if 0 in dims[1:]:
            raise BadInputError(f"{shown}: IDX header says images of {dims[1]}x{dims[2]}: no pixels")
        what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels"
        unit = "pixels" if ndim == 3 else "labels"
        expected = math.prod(dims)
        if expected > max_bytes:
            raise BadInputError(f"{shown}: header says {what} ({expected} bytes), more than "
                                f"ingest.max_archive_bytes {max_bytes}")
        payload = _read_upto(fh, expected + 1, shown)
    if len(payload) < expected:
        raise BadInputError(f"{shown}: truncated IDX: header says {what}, "
                            f"found {len(payload)} bytes of {unit}")
    if len(payload) > expected:
        raise BadInputError(f"{shown}: IDX size mismatch: header says {what}, found more than "
                            f"{expected} bytes of {unit} (trailing data)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _read_idx_pair(images: Path, labels: Path, cfg: IngestConfig, names: _Names,
                   label_names: _Names | None = None) -> Batch:
    shown, shown_labels = names(images), (label_names or names)(labels)
    x = read_idx_array(images, 3, cfg.max_archive_bytes, shown)
    y = read_idx_array(labels, 1, cfg.max_archive_bytes, shown_labels)
    if len(x) != len(y):
        raise BadInputError(f"{shown_labels}: {len(y)} labels for {len(x)} images in {shown}")
    sources = [f"{shown}[{i}]" for i in range(len(x))]
    return Batch(np.ascontiguousarray(x[:, None]), y.astype(str), sources)


# --- image folders --------------------------------------------------------------------

def _walk_images(root: Path, names: _Names) -> tuple[list[Path], list[Rejected]]:
    """Image files under root, breadth first; links that leave root are refused, not followed."""
    real_root = root.resolve()
    found, rejects, seen, queue = [], [], {real_root}, deque([root])
    while queue:
        folder = queue.popleft()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = Path(entry.path)
            if _skipped(entry.name):
                continue
            if entry.is_symlink() and not _resolves_inside(path, real_root):
                rejects.append(Rejected(names(path), "symlink points outside the source (or loops); "
                                                     "not followed"))
            elif entry.is_dir():
                real = path.resolve()  # each real folder once: in-source links cannot loop
                if real not in seen:
                    seen.add(real)
                    queue.append(path)
            elif (suffix := path.suffix.lower()) in IMAGE_SUFFIXES:
                if entry.is_file():
                    found.append(path)
                else:
                    rejects.append(Rejected(names(path), "not a regular file (broken link?)"))
            elif suffix in OTHER_IMAGE_SUFFIXES:
                rejects.append(Rejected(names(path), f"unsupported image format {suffix} "
                                                     "(PNG, JPEG, BMP only)"))
    return sorted(found), rejects


def _resolves_inside(path: Path, real_root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _decode_image(path: Path, cfg: IngestConfig) -> np.ndarray | str:
    """One image as (H, W) gray or (H, W, 3) RGB uint8, or the reason it was refused."""
    from PIL import Image, UnidentifiedImageError

    limit = cfg.max_image_pixels
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            w, h = img.size  # from the header: nothing decoded yet
            if w * h > limit:
                return f"image header claims {w}x{h} pixels (> ingest.max_image_pixels {limit})"
            gray = cfg.grayscale if cfg.grayscale is not None else img.mode in GRAY_MODES
            mode = "L" if gray else "RGB"
            img = img.convert(mode) if img.mode != mode else img
            if cfg.image_size is not None and img.size != (cfg.image_size[1], cfg.image_size[0]):
                img = img.resize((cfg.image_size[1], cfg.image_size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        return f"image header claims more pixels than PIL allows (> ingest.max_image_pixels {limit}): {exc}"
    except UnidentifiedImageError:
        return "cannot decode image: not a PNG, JPEG or BMP file"
    except Exception as exc:  # noqa: BLE001 - hostile files make PIL raise almost anything
        return f"cannot decode image: {str(exc) or type(exc).__name__}"


def _read_image_folder(root: Path, cfg: IngestConfig, names: _Names) -> Read:
    """Images under root/<label>/... (nested folders allowed); the label is the top folder."""
    from PIL import Image

    paths, rejects = _walk_images(root, names)
    flat = [p for p in paths if p.parent == root]
    rejects += [Rejected(names(p), "image is not inside a <label>/ folder") for p in flat]
    paths = [p for p in paths if p.parent != root]
    if not paths:
        raise BadInputError(f"{names(root)}: no images found in <root>/<label>/ (PNG, JPEG, BMP)"
                            + (f"; {len(flat)} lie directly in the root" if flat else ""))
    arrays, kept = [], []
    with warnings.catch_warnings():
        # our own header check against ingest.max_image_pixels stands in for PIL's warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for path in paths:
            img = _decode_image(path, cfg)
            if isinstance(img, str):
                rejects.append(Rejected(names(path), img))
            else:
                arrays.append(img)
                kept.append(path)
    batch, odd = _stack_images(arrays, kept, root, names)
    return batch, rejects + odd


def _stack_images(arrays: list[np.ndarray], paths: list[Path], root: Path, names: _Names) -> Read:
    """One (N, C, H, W) array; images off the majority shape are refused."""
    if not arrays:
        return Batch(np.zeros((0, 1, 0, 0), np.uint8), np.array([], dtype=str), []), []
    if any(a.ndim == 3 for a in arrays):  # some RGB: gray ones replicated, as PIL's L->RGB
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
    shapes = [a.shape for a in arrays]
    common = Counter(shapes).most_common(1)[0][0]
    keep = [i for i, s in enumerate(shapes) if s == common]
    odd = [Rejected(names(paths[i]), f"image shape {_chw(shapes[i])} differs from the batch's "
                                     f"{_chw(common)}; set ingest.image_size to resize")
           for i, s in enumerate(shapes) if s != common]
    x = np.stack([arrays[i] for i in keep])  # (N, H, W) or (N, H, W, 3)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x[:, None]
    labels = np.array([_relative(paths[i], root).split("/", 1)[0] for i in keep])
    return Batch(x, labels, [names(paths[i]) for i in keep]), odd


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else (1, *shape)


# --- NPZ ------------------------------------------------------------------------------

def _npy_header(zf: zipfile.ZipFile, member: str, key: str, cfg: IngestConfig, shown: str) -> None:
    """Refuse object arrays and oversized arrays from the .npy header, before loading."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fh)
    if dtype.hasobject:
        raise BadInputError(f"{shown}: array {key!r} holds Python objects (dtype {dtype}); refused "
                            "because loading it would unpickle (run) code; save numeric arrays")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cfg.max_archive_bytes:
        raise BadInputError(f"{shown}: array {key!r} of shape {shape} is {nbytes} bytes, more "
                            f"than ingest.max_archive_bytes {cfg.max_archive_bytes}")


def _load_npz(path: Path, cfg: IngestConfig, shown: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:  # an .npz is a zip of .npy files
            members = {m[:-4]: m for m in zf.namelist() if m.endswith(".npy")}
            keys = [next((k for k in alias if k in members), None)
                    for alias in (("x", "images"), ("y", "labels"))]
            if None in keys:
                raise BadInputError(f"{shown}: expected arrays 'x' (or 'images') and 'y' (or "
                                    f"'labels'), found {sorted(members) or 'none'}")
            for key in keys:
                _npy_header(zf, members[key], key, cfg, shown)
        with np.load(path, allow_pickle=False) as npz:
            return npz[keys[0]], npz[keys[1]]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError) as exc:
        raise BadInputError(f"{shown}: not a readable .npz file: {exc}") from None


def _npz_images(x: np.ndarray, shown: str) -> np.ndarray:
    """(N, C, H, W) from (N, H, W), channels-last (N, H, W, C) or channels-first, C in 1, 3."""
    if x.ndim in (3, 4) and 0 in x.shape[1:]:
        raise BadInputError(f"{shown}: array 'x' has shape {x.shape}: images with no pixels")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise BadInputError(f"{shown}: array 'x' has shape {x.shape}; expected (N, H, W), "
                        "(N, H, W, C) or (N, C, H, W) with C 1 or 3")


def _npz_labels(y: np.ndarray, n: int, shown: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise BadInputError(f"{shown}: array 'y' has shape {y.shape}; expected ({n},), one label "
                            f"per image in 'x'")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuUS":
        raise BadInputError(f"{shown}: labels 'y' of dtype {y.dtype}; expected integers or strings")
    return y.astype(str)


def _to_uint8(x: np.ndarray, shown: str) -> tuple[np.ndarray, list[str | None]]:
    """uint8 pixels and, per sample, why it was refused (None if fine).

    Floats are in 0..1 (scaled by 255) when most samples stay within 1, else 0..255; values
    that round into 0..255 are fine (float noise such as 255.00001).
    """
    if x.dtype.kind not in "iuf":
        raise BadInputError(f"{shown}: array 'x' has dtype {x.dtype}; expected integers or floats")
    if x.dtype == np.uint8 or len(x) == 0:
        return x.astype(np.uint8, copy=False), [None] * len(x)
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat).all(axis=1) if x.dtype.kind == "f" else np.ones(len(x), bool)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    top = 1.0 if x.dtype.kind == "f" and np.mean(hi[finite] <= 1.0) > 0.5 else 255.0
    scaled = np.round(np.where(finite[:, None], flat, 0).astype(np.float64) * (255.0 / top))
    ok = finite & (scaled.min(axis=1) >= 0) & (scaled.max(axis=1) <= 255)
    reasons = [None if good else "NaN or inf pixel values" if not fin
               else f"pixel values outside 0..{top:g} (min {a:g}, max {b:g})"
               for good, fin, a, b in zip(ok, finite, lo, hi, strict=True)]
    pixels = np.where(ok[:, None], scaled, 0).astype(np.uint8)
    return pixels.reshape(x.shape), reasons


def _read_npz(path: Path, cfg: IngestConfig, names: _Names) -> Read:
    """Arrays x (images) and y (labels) from an .npz, loaded without pickle."""
    shown = names(path)
    x, y = _load_npz(path, cfg, shown)
    x = _npz_images(x, shown)
    labels = _npz_labels(y, len(x), shown)
    pixels, reasons = _to_uint8(x, shown)
    keep = np.array([r is None for r in reasons], bool)
    rejects = [Rejected(f"{shown}[{i}]", r) for i, r in enumerate(reasons) if r is not None]
    sources = [f"{shown}[{i}]" for i in np.flatnonzero(keep)]
    return Batch(np.ascontiguousarray(pixels[keep]), labels[keep], sources), rejects


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
    raise BadInputError(f"{shown}: the header has no {label_column!r} column (it starts "
                        f"{cells[:3]}); set ingest.csv_label_column")


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
        if not text:
            return f"missing pixel value in column {column}"
        if not _is_number(text) or not math.isfinite(float(text)):
            return f"non-numeric pixel value {text!r} in column {column}"
        value = float(text)
        if not 0 <= value <= 255 or value != int(value):
            return f"pixel value {text!r} in column {column} is not an integer in 0..255"
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


def _read_csv(path: Path, cfg: IngestConfig, names: _Names) -> Read:
    """label + H*H pixel columns (Kaggle MNIST layout), header optional; bad rows refused."""
    shown = names(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            return _parse_csv(reader, cfg.csv_label_column, shown)
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{shown}: not UTF-8 text: {exc}") from None
        except csv.Error as exc:
            raise BadInputError(f"{shown}: line {reader.line_num}: malformed CSV: {exc}") from None


def _parse_csv(reader, label_column: str, shown: str) -> Read:  # reader: a csv.reader
    first = next((r for r in reader if r), None)
    if first is None:
        raise BadInputError(f"{shown}: empty CSV: no rows")
    header, at = _csv_layout(first, label_column, shown)
    side, width = _csv_side(len(first), shown), len(first)
    columns = [c for i, c in enumerate(header or []) if i != at] or [str(i + 1) for i in range(1, width)]
    rows, labels, sources, rejects = [], [], [], []
    for cells in reader if header else _chain_first(first, reader):
        if not cells:
            continue
        line = reader.line_num
        if len(cells) != width:
            raise BadInputError(f"{shown}: line {line} has {len(cells)} columns, expected "
                                f"{width} like the {'header' if header else 'first row'}")
        label, pixels = cells[at].strip(), cells[:at] + cells[at + 1:]
        parsed = _parse_pixels(pixels, columns) if label else "missing label"
        if isinstance(parsed, str):
            rejects.append(Rejected(f"{shown}:{line}", f"line {line}: {parsed}"))
        else:
            rows.append(parsed)
            labels.append(label)
            sources.append(f"{shown}:{line}")
    x = np.stack(rows).reshape(-1, 1, side, side) if rows else np.zeros((0, 1, side, side), np.uint8)
    return Batch(x, np.array(labels, dtype=str), sources), rejects


def _chain_first(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


# --- archives -------------------------------------------------------------------------

def _read_archive(path: Path, cfg: IngestConfig, names: _Names, kind: str) -> Read:
    """Extract into a private temporary folder, then read what it holds."""
    shown = names(path)
    with tempfile.TemporaryDirectory(prefix="evergreen-archive-") as tmp:
        root = Path(tmp).resolve()
        if kind == "zip":
            _extract_zip(path, root, cfg, shown)
        else:
            _extract_tar(path, root, cfg, shown)
        return _read_path(_descend(root), cfg, _Names(root, f"{shown}:"), in_archive=True)


def _descend(root: Path) -> Path:
    """Into a lone top-level folder (archive/mnist/7/x.png), but not into a label folder."""
    while True:
        entries = [p for p in root.iterdir() if not _skipped(p.name)]
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
        raise BadInputError(f"{shown}: member {name!r} has an absolute path or '..' (zip slip); "
                            "refusing the whole archive, nothing was extracted")
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
        if not _resolves_inside(dest, self.root):  # chained links can still escape
            raise BadInputError(f"{self.shown}: member {rel.as_posix()!r} is a symlink that "
                                "points outside the archive; refused")


def _extract_zip(path: Path, root: Path, cfg: IngestConfig, shown: str) -> None:
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
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, ValueError) as exc:
        raise BadInputError(f"{shown}: cannot extract zip archive: {exc}") from None


def _checked_link(rel: PurePosixPath, target: str, hard: bool, shown: str) -> PurePosixPath:
    inside = _link_target(rel, target, hard)
    if inside is None:
        kind = "hardlink" if hard else "symlink"
        raise BadInputError(f"{shown}: member {rel.as_posix()!r} is a {kind} to {target!r}, "
                            "outside the archive; refusing the whole archive")
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
            raise BadInputError(f"{shown}: member {m.name!r} is a device, fifo or other special "
                                "file; only files, folders and links inside are allowed")
    return plan


def _extract_tar(path: Path, root: Path, cfg: IngestConfig, shown: str) -> None:
    sink = _Sink(root, cfg, shown)
    try:
        with tarfile.open(path, "r:*") as tf:
            plan = _tar_plan(tf, cfg, shown)
            for rel, m, _ in plan:
                if m.isdir():
                    sink.mkdir(rel)
                elif (m.isreg() or m.islnk()) and rel.parts:  # a hardlink: a copy of its target
                    src = tf.extractfile(m)
                    if src is None:
                        raise BadInputError(f"{shown}: member {m.name!r} cannot be read")
                    with src:
                        sink.write(rel, src)
            for rel, m, target in plan:
                if m.issym():
                    sink.link(rel, target)
    except (tarfile.TarError, OSError, EOFError, zlib.error, KeyError, RuntimeError) as exc:
        raise BadInputError(f"{shown}: cannot extract tar archive: {exc}") from None


# --- shape and channel policy -----------------------------------------------------------

def _conform(batch: Batch, cfg: IngestConfig) -> Batch:
    """Apply ingest.grayscale and ingest.image_size to formats that hold arrays (IDX, NPZ, CSV)."""
    x = batch.x
    if len(x) == 0:
        return batch
    if cfg.grayscale is True and x.shape[1] == 3:
        # PIL's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, so every format agrees
        x = ((x.astype(np.uint32) * np.array([19595, 38470, 7471], np.uint32)[:, None, None]).sum(1)
             + 0x8000 >> 16).astype(np.uint8)[:, None]
    elif cfg.grayscale is False and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    if cfg.image_size is not None and x.shape[2:] != tuple(cfg.image_size):
        x = _resize(x, tuple(cfg.image_size))
    return batch if x is batch.x else Batch(x, batch.labels, batch.sources)


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, *size), bilinear as for image folders."""
    from PIL import Image

    h, w = size
    out = np.empty((len(x), x.shape[1], h, w), np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        arr = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR))
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out
