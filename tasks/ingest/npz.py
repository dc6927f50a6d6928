"""NumPy .npz sources: arrays x (images) and y (labels), read without pickle, a bounded number
of rows at a time; floats scaled to uint8, samples with values out of range refused."""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.names import display_name
from tasks.ingest.reading import MAX_LABEL, Batch, Read, Reading, Rejected
from tasks.ingest.shape import conform
from tasks.ingest.streams import read_upto

NPZ_CHUNK_BYTES = 64 << 20  # rows of a large array are converted this many bytes at a time


def read_npz(path: Path, reading: Reading) -> Read:
    """Arrays x (images) and y (labels) from an .npz, loaded without pickle."""
    shown = reading.names(path)
    pixels, y, reasons, how = _load_npz(path, reading, shown)
    labels = _npz_labels(y, len(pixels), shown)
    pixels = _npz_images(pixels)
    keep = np.array([r is None for r in reasons], bool)
    rejects = [Rejected(f"{shown}[{i}]", r) for i, r in enumerate(reasons) if r is not None]
    sources = [f"{shown}[{i}]" for i in np.flatnonzero(keep)]
    return conform(Batch(np.ascontiguousarray(pixels[keep]), labels[keep], sources), reading, how), rejects


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
            _images_header(shape, dtype, "x", reading.cfg, shown)
            reading.budget(math.prod(shape), f"array 'x' of shape {shape}", shown)
            top = _float_top(_npy_rows(zf, x_member, "x", reading, shown)) if dtype.kind == "f" else 255.0
            chunks = [_to_uint8(rows, top) for rows in _npy_rows(zf, x_member, "x", reading, shown)]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError,
            NotImplementedError, RuntimeError) as exc:  # the last two: unsupported or encrypted zip
        raise BadInputError(f"{shown}: not a readable .npz file: {type(exc).__name__}") from None
    how = f"NPZ {dtype}" + (f", scaled from 0..{top:g}" if dtype != np.uint8 else "")
    if not chunks:
        return np.zeros((0, *shape[1:]), np.uint8), y, [], how
    return np.concatenate([c[0] for c in chunks]), y, [r for c in chunks for r in c[1]], how


def read_npy_images(fh: IO[bytes], key: str, cfg: IngestConfig,
                    shown: str) -> tuple[np.ndarray, list[str | None]]:
    """uint8 (N, C, H, W) images from one .npy stream (no pickle, within ingest's limits: bytes,
    pixels per image, dtype, shape) and, per sample, why it is refused (None if fine)."""
    shape, fortran, dtype = _npy_header(fh, key, cfg, shown)
    _images_header(shape, dtype, key, cfg, shown)
    nbytes = math.prod(shape) * dtype.itemsize
    data = read_upto(fh, nbytes, shown)
    if len(data) < nbytes:
        raise BadInputError(f"{shown}: array {key!r} is truncated ({len(data)} of {nbytes} bytes)")
    x = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    pixels, reasons = _to_uint8(x, _float_top(iter([x])) if dtype.kind == "f" else 255.0)
    return np.ascontiguousarray(_npz_images(pixels)), reasons


def _images_header(shape: tuple, dtype: np.dtype, key: str, cfg: IngestConfig, shown: str) -> None:
    """Refuse an images array of the wrong shape or dtype, or images past max_image_pixels."""
    _npz_shape(shape, key, shown)
    side = shape[1:3] if len(shape) == 3 or shape[3] in (1, 3) else shape[2:4]
    if side[0] * side[1] > cfg.max_image_pixels:
        raise BadInputError(f"{shown}: array {key!r} holds images of {side[0]}x{side[1]} pixels "
                            f"(> ingest.max_image_pixels {cfg.max_image_pixels})")
    if dtype.kind not in "iuf":
        raise BadInputError(f"{shown}: array {key!r} has dtype {dtype}; expected integers or floats")


def _npy_header(fh: IO[bytes], key: str, cfg: IngestConfig, shown: str) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran order, dtype) from the .npy header; object and oversized arrays refused."""
    try:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fh)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises almost anything
        why = " ".join(str(exc).split())[:100]  # one line: numpy's text may quote the header
        raise BadInputError(f"{shown}: array {key!r} has a malformed .npy header "
                            f"({type(exc).__name__}: {why})") from None
    if not all(type(n) is int and n >= 0 for n in shape):  # numpy lets (True, 8, 8) through
        raise BadInputError(f"{shown}: array {key!r} has a malformed .npy header (shape "
                            f"{str(shape)[:60]}; expected whole numbers)")
    if dtype.hasobject:
        raise BadInputError(f"{shown}: array {key!r} holds Python objects (dtype {dtype}); refused "
                            "because loading it would unpickle (run) code; save numeric arrays")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cfg.max_archive_bytes:
        raise BadInputError(f"{shown}: array {key!r} of shape {shape} is {nbytes} bytes, more "
                            f"than ingest.max_archive_bytes {cfg.max_archive_bytes}")
    return shape, fortran, dtype


def _npz_members(zf: zipfile.ZipFile, shown: str) -> tuple[str, str]:
    """The .npy members holding the images (x or images) and the labels (y or labels)."""
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
            data = read_upto(fh, n * row, shown)
            if len(data) < n * row:
                raise BadInputError(f"{shown}: array {key!r} is truncated")
            yield np.frombuffer(data, dtype=dtype).reshape(n, *shape[1:])


def _npz_shape(shape: tuple, key: str, shown: str) -> None:
    """Refuse an images array that is not (N, H, W), (N, H, W, C) or (N, C, H, W)."""
    if len(shape) in (3, 4) and 0 in shape[1:]:
        raise BadInputError(f"{shown}: array {key!r} has shape {shape}: images with no pixels")
    if not (len(shape) == 3 or len(shape) == 4 and (shape[3] in (1, 3) or shape[1] in (1, 3))):
        raise BadInputError(f"{shown}: array {key!r} has shape {shape}; expected (N, H, W), "
                            "(N, H, W, C) or (N, C, H, W) with C 1 or 3")


def _npz_images(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) from (N, H, W), channels-last (N, H, W, C) or channels-first, C in 1, 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    return x


def _npz_labels(y: np.ndarray, n: int, shown: str) -> np.ndarray:
    """The labels as (N,) strings: integers or text, none empty or too long."""
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
