"""MNIST-format IDX files (raw or gzip): images and labels files found, paired and read, their
headers checked against the limits before the payload is read."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from evergreen.errors import BadInputError
from tasks.ingest.names import Names, display_name
from tasks.ingest.reading import Batch, Reading
from tasks.ingest.shape import conform
from tasks.ingest.streams import first_bytes, open_maybe_gz, read_upto


def read_idx_pair(images: Path, labels: Path, reading: Reading,
                  label_names: Names | None = None) -> Batch:
    """An IDX images file and its labels file as one Batch, conformed."""
    shown, shown_labels = reading.names(images), (label_names or reading.names)(labels)
    x = read_idx_array(images, 3, reading, shown)  # its header is checked against the limits first
    y = read_idx_array(labels, 1, reading, shown_labels)
    if len(x) != len(y):
        raise BadInputError(f"{shown_labels}: {len(y)} labels for {len(x)} images in {shown}")
    sources = [f"{shown}[{i}]" for i in range(len(x))]
    return conform(Batch(np.ascontiguousarray(x[:, None]), y.astype(str), sources), reading, "IDX uint8")


def read_idx_array(path: Path, ndim: int, reading: Reading, shown: str) -> np.ndarray:
    """One MNIST-format IDX file of unsigned bytes with `ndim` dimensions (raw or gzip);
    the header's counts are checked against the limits before the payload is read."""
    cfg = reading.cfg
    with open_maybe_gz(path, reading, shown) as fh:
        dims = _idx_dims(read_upto(fh, 4 + 4 * ndim, shown), ndim, shown)
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
        payload = read_upto(fh, expected + 1, shown)
    if len(payload) < expected:
        raise BadInputError(f"{shown}: truncated IDX: header says {what}, "
                            f"found {len(payload)} bytes of {unit}")
    if len(payload) > expected:
        raise BadInputError(f"{shown}: IDX size mismatch: header says {what}, found more than "
                            f"{expected} bytes of {unit} (trailing data)")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _idx_dims(head: bytes, ndim: int, shown: str) -> tuple[int, ...]:
    """The dimensions in an IDX header, refused unless unsigned bytes of ndim with pixels."""
    if len(head) < 4 + 4 * ndim or head[:3] != b"\0\0\x08" or head[3] != ndim:
        raise BadInputError(
            f"{shown}: not an IDX file of unsigned bytes with {ndim} dimensions "
            f"(magic {head[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if 0 in dims[1:]:
        raise BadInputError(f"{shown}: IDX header says images of {dims[1]}x{dims[2]}: no pixels")
    return dims


def looks_idx(path: Path, reading: Reading, head: bytes | None = None) -> bool:
    """Whether a file is IDX: by its name (idx, ubyte), else by its magic number."""
    if "idx" in path.name.lower() or "ubyte" in path.name.lower():
        return True
    head = first_bytes(path, reading, 4) if head is None else head
    return head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03")


def _idx_ndim(path: Path, reading: Reading) -> int | None:
    """3 for an images file, 1 for labels: from the magic number, else from the name."""
    head = first_bytes(path, reading, 4)
    if head[:3] == b"\0\0\x08" and head[3:4] in (b"\x01", b"\x03"):  # a cut-short file may end at 3
        return head[3]
    name = path.name.lower()
    return 3 if ("idx3" in name or "images" in name) else 1 if ("idx1" in name or "labels" in name) else None


def pair_idx(files: list[Path], reading: Reading) -> list[tuple[Path, Path]]:
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


def idx_pair_of(images: Path, reading: Reading) -> tuple[Path, Path]:
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


def _labels_name(images_name: str) -> str:
    """The labels file's name for an images file's (idx3 -> idx1, images -> labels)."""
    return images_name.replace("idx3", "idx1").replace("images", "labels")
