"""Benchmark data: the bundled digits as the pipeline splits them, and an MNIST-format set
generated from them (8×8 digits upscaled to a 20×20 box in a 28×28 canvas, as MNIST is
laid out, each copy warped by a random rotation, zoom and shift).

Train and test copies come from different source digits (the pipeline's content-hash
split), so a test image is never a warp of a training image. `evergreen bench --mnist DIR`
reads a real MNIST-format set instead (idx_set).
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np


def digits_sources() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The bundled digits split by content hash: {"train" (train + val), "test"} -> (x, y)."""
    from evergreen.config import PreprocessConfig
    from tasks.ingest import content_hash, load_digits_batch
    from tasks.preprocess import split_of

    batch = load_digits_batch()
    cfg = PreprocessConfig()
    splits = np.array([split_of(content_hash(img), cfg.split_salt, cfg.val_fraction,
                                cfg.test_fraction) for img in batch.x])
    y = batch.labels.astype(np.int64)
    return {"train": (batch.x[splits != "test"], y[splits != "test"]),
            "test": (batch.x[splits == "test"], y[splits == "test"])}


def upscale_warped(x: np.ndarray, n: int, seed: int, size: int = 28,
                   box: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n warped size×size copies of uint8 (N, 1, 8, 8) digits, each scaled to a box×box square
    in the middle (default: MNIST's 20/28); returns (images, source index)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, len(x), (n,), generator=gen)
    box = box or round(size * 20 / 28)  # MNIST: a 20×20 digit centred in 28×28
    digits = F.interpolate(torch.from_numpy(x).float(), size=(box, box), mode="bilinear",
                           align_corners=False)
    pad = (size - box) // 2
    canvas = F.pad(digits, (pad, size - box - pad, pad, size - box - pad))
    rand = lambda: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731 - uniform in [-1, 1)
    angle, scale = rand() * math.radians(12), 1 + rand() * 0.1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift = 2 * 2 / size  # up to 2 pixels, in grid units
    theta = torch.stack([torch.stack([cos, -sin, rand() * shift], 1),
                         torch.stack([sin, cos, rand() * shift], 1)], 1)
    out = []
    for i in range(0, n, 4096):  # chunks keep the float copies small
        part = canvas[src[i:i + 4096]]
        grid = F.affine_grid(theta[i:i + 4096], list(part.shape), align_corners=False)
        out.append(F.grid_sample(part, grid, align_corners=False))
    images = torch.cat(out).round().clamp(0, 255).to(torch.uint8)
    return images.numpy(), src.numpy()


def mnist_like(n_train: int, n_test: int, seed: int = 0):
    """((x_train, y_train), (x_test, y_test)): uint8 (N, 1, 28, 28) and int64 labels."""
    sources = digits_sources()
    out = []
    for (x, y), n, s in ((sources["train"], n_train, seed), (sources["test"], n_test, seed + 1)):
        images, src = upscale_warped(x, n, s)
        out.append((images, y[src]))
    return tuple(out)


MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_ENV = "EVERGREEN_BENCH_MNIST"  # the folder `evergreen bench --mnist DIR` names


def idx_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """MNIST's four IDX files in `folder` (raw or .gz), by split; a missing one is named."""
    from evergreen.errors import BadInputError

    found = {}
    for split, names in MNIST_FILES.items():
        pair = []
        for name in names:
            path = next((folder / f"{name}{ext}" for ext in ("", ".gz")
                         if (folder / f"{name}{ext}").is_file()), None)
            if path is None:
                expected = ", ".join(n for pair_names in MNIST_FILES.values() for n in pair_names)
                raise BadInputError(f"{folder / name}[.gz]: missing; bench --mnist expects a folder "
                                    f"with MNIST's four IDX files ({expected}), raw or gzipped")
            pair.append(path)
        found[split] = (pair[0], pair[1])
    return found


def idx_set(folder: Path, n_train: int | None = None, n_test: int | None = None):
    """((x_train, y_train), (x_test, y_test)) from an MNIST-format folder, the first n of each
    (all when None): uint8 (N, C, H, W) and int64 labels (the IDX label bytes)."""
    from evergreen.config import IngestConfig
    from tasks.ingest import read_idx

    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        batch, _ = read_idx(*idx_files(folder)[split], IngestConfig())
        out.append((batch.x[:n], batch.labels[:n].astype(np.int64)))
    return tuple(out)


def write_idx(folder: Path, x: np.ndarray, y: np.ndarray, prefix: str = "train") -> tuple[Path, Path]:
    """MNIST's file format: <prefix>-images-idx3-ubyte.gz and <prefix>-labels-idx1-ubyte.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    n, _, h, w = x.shape
    images = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels = folder / f"{prefix}-labels-idx1-ubyte.gz"
    images.write_bytes(gzip.compress(struct.pack(">4B3I", 0, 0, 8, 3, n, h, w)
                                     + x[:, 0].tobytes(), compresslevel=1))
    labels.write_bytes(gzip.compress(struct.pack(">4BI", 0, 0, 8, 1, n)
                                     + y.astype(np.uint8).tobytes(), compresslevel=1))
    return images, labels


def shifted_copies(x: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n copies of uint8 (N, C, H, W) images rolled by one pixel (wrapping round): new content
    with each image's pixel values unchanged, so a batch of them passes the drift checks."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(x), n)
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    picks = rng.integers(0, len(moves), n)
    out = np.stack([np.roll(x[s], moves[m], axis=(1, 2)) for s, m in zip(src, picks)])
    return out, src
