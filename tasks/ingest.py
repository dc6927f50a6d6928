"""Ingest: read a source into a packed, content-addressed batch plus per-sample metadata."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
META_COLUMNS = ["content_hash", "label", "height", "width", "channels",
                "pixel_min", "pixel_max", "pixel_mean", "source", "batch_id"]


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
class IngestResult:
    batch_id: str | None  # None when nothing new was added
    added: int
    duplicates_in_batch: int
    already_present: int
    source: str


def load_digits_batch() -> Batch:
    """scikit-learn's bundled 8x8 digits (0..16 levels), rescaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(str)
    return Batch(x, labels, [f"sklearn:digits[{i}]" for i in range(len(x))])


def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadInputError(f"{path.name}: corrupt gzip stream: {exc}") from None
    return raw


def read_idx_array(path: Path, ndim: int) -> np.ndarray:
    """Parse one MNIST-format IDX file of unsigned bytes with `ndim` dimensions."""
    raw = _open_maybe_gz(path)
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise BadInputError(
            f"{path.name}: not an IDX file of unsigned bytes with {ndim} dimensions "
            f"(magic {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = raw[4 + 4 * ndim:]
    expected = int(np.prod(dims))
    if len(payload) != expected:
        shape = "x".join(map(str, dims[1:])) or "scalar"
        raise BadInputError(
            f"{path.name}: truncated IDX: header says {dims[0]} items of {shape}, "
            f"found {len(payload)} bytes, expected {expected}"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def find_idx_pair(path: Path) -> tuple[Path, Path]:
    """Locate (images, labels) IDX files from a directory or from the images file."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if "idx" in p.name or "ubyte" in p.name)
        images = [p for p in files if "idx3" in p.name or "images" in p.name]
        labels = [p for p in files if "idx1" in p.name or "labels" in p.name]
        if len(images) != 1 or len(labels) != 1:
            raise BadInputError(
                f"{path}: expected one IDX images file (idx3) and one labels file (idx1), "
                f"found {[p.name for p in images]} and {[p.name for p in labels]}"
            )
        return images[0], labels[0]
    name = path.name.replace("idx3", "idx1").replace("images", "labels")
    if name == path.name or not (path.parent / name).exists():
        raise BadInputError(f"{path}: no matching IDX labels file next to it (looked for {name})")
    return path, path.parent / name


def read_idx(images_path: Path, labels_path: Path) -> Batch:
    """MNIST-format image and label IDX files (raw or .gz)."""
    x = read_idx_array(images_path, 3)
    y = read_idx_array(labels_path, 1)
    if len(x) != len(y):
        raise BadInputError(
            f"{labels_path.name}: {len(y)} labels for {len(x)} images in {images_path.name}"
        )
    sources = [f"{images_path.name}[{i}]" for i in range(len(x))]
    return Batch(np.ascontiguousarray(x[:, None]), y.astype(str), sources)


def _decode_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot decode image: {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _image_mode(paths: list[Path], grayscale: bool | None) -> str:
    from PIL import Image

    if grayscale is not None:
        return "L" if grayscale else "RGB"
    for path in paths:
        try:
            with Image.open(path) as img:
                if img.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                    return "RGB"
        except OSError as exc:
            raise BadInputError(f"{path}: cannot decode image: {exc}") from None
    return "L"


def read_image_folder(root: Path, cfg: IngestConfig) -> Batch:
    """Images under root/<label>/... (nested folders allowed); the label is the top folder."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    paths = [p for p in paths if len(p.relative_to(root).parts) >= 2]
    if not paths:
        raise BadInputError(f"{root}: no images found in {root}/<label>/ (PNG, JPEG, BMP)")
    mode = _image_mode(paths, cfg.grayscale)
    images = [_decode_image(p, mode, cfg.image_size) for p in paths]
    odd = next((i for i, img in enumerate(images) if img.shape != images[0].shape), None)
    if odd is not None:
        raise BadInputError(
            f"{paths[odd]}: image shape {images[odd].shape} (C, H, W) differs from "
            f"{paths[0].name} {images[0].shape}; set ingest.image_size: [H, W] to resize"
        )
    labels = np.array([p.relative_to(root).parts[0] for p in paths])
    return Batch(np.stack(images), labels, [str(p.relative_to(root)) for p in paths])


def read_source(source: str, cfg: IngestConfig) -> Batch:
    """Dispatch on the source: 'digits', an IDX file or folder, or an image folder."""
    if source == "digits":
        return load_digits_batch()
    path = Path(source).expanduser()
    if not path.exists():
        raise BadInputError(f"{source}: no such file or directory (expected 'digits', an image "
                            "folder root/<label>/*.png, or MNIST IDX files)")
    is_idx = (path.is_file()
              or any("idx" in p.name or "ubyte" in p.name for p in path.iterdir()))
    return read_idx(*find_idx_pair(path)) if is_idx else read_image_folder(path, cfg)


def content_hash(image: np.ndarray) -> str:
    """sha256 of the shape and the pixels: equal images, equal hash, whatever the file."""
    return hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


def metadata_table(batch: Batch, hashes: list[str], batch_id: str) -> pd.DataFrame:
    """One row per sample: hash, label, shape, pixel statistics, source."""
    x = batch.x.reshape(len(batch), -1)
    n, c, h, w = batch.x.shape
    return pd.DataFrame({
        "content_hash": hashes, "label": batch.labels.astype(str),
        "height": h, "width": w, "channels": c,
        "pixel_min": x.min(axis=1), "pixel_max": x.max(axis=1),
        "pixel_mean": x.mean(axis=1).round(4),
        "source": batch.sources, "batch_id": batch_id,
    }, columns=META_COLUMNS)


def read_metadata(batches_dir: Path) -> pd.DataFrame:
    """All batches' metadata rows, oldest batch first."""
    files = sorted(batches_dir.glob("*.csv")) if batches_dir.exists() else []
    frames = [pd.read_csv(f, dtype={"label": str, "content_hash": str, "batch_id": str,
                                   "source": str}, keep_default_na=False) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=META_COLUMNS)


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
    """Write the shard (.npz) and metadata (.csv); the id is a hash of the content."""
    batch_id = hashlib.sha256("".join(sorted(
        f"{h}:{y}" for h, y in zip(hashes, batch.labels, strict=False))).encode()).hexdigest()[:16]
    buf = io.BytesIO()
    np.savez_compressed(buf, x=batch.x, labels=batch.labels.astype(str))
    batches_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(batches_dir / f"{batch_id}.npz", buf.getvalue())
    meta = metadata_table(batch, hashes, batch_id).to_csv(index=False).encode()
    atomic_write_bytes(batches_dir / f"{batch_id}.csv", meta)  # written last: marks it landed
    return batch_id


def check_compatible(batch: Batch, batches_dir: Path) -> None:
    """A new batch must have the dataset's image shape (C, H, W)."""
    meta = read_metadata(batches_dir)
    if meta.empty or len(batch) == 0:
        return
    row = meta.iloc[0]
    have = (int(row["channels"]), int(row["height"]), int(row["width"]))
    if batch.x.shape[1:] != have:
        raise BadInputError(
            f"new batch: images are {batch.x.shape[1:]} (C, H, W) but the dataset holds {have}; "
            "set ingest.image_size and ingest.grayscale to match"
        )


def ingest(source: str, cfg: IngestConfig, batches_dir: Path) -> IngestResult:
    """Read `source`, drop known samples, land the rest as one content-addressed batch."""
    batch = read_source(source, cfg)
    if len(batch) == 0:
        raise BadInputError(f"{source}: holds no samples")
    check_compatible(batch, batches_dir)
    known = set(read_metadata(batches_dir)["content_hash"])
    fresh, hashes, repeats, present = dedupe(batch, known)
    batch_id = write_batch(fresh, hashes, batches_dir) if len(fresh) else None
    return IngestResult(batch_id, len(fresh), repeats, present, source)
