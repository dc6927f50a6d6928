"""One shape per batch: the channels and size every image gets (ingest.channels,
ingest.image_size, or the dataset's shape), and array formats conformed to it."""

from __future__ import annotations

import statistics
from collections import Counter

import numpy as np

from evergreen.config import IngestConfig
from tasks.ingest.decode import Target, fit_array
from tasks.ingest.reading import Batch, Reading, Shape


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


def choose_target(sizes: list[tuple[int, int]], colour: bool, cfg: IngestConfig,
                  conform_to: Shape | None) -> tuple[Target, list[str]]:
    """The shape every image of the batch gets, and the notes saying what was chosen."""
    notes = []
    if cfg.channels != "auto":
        channels = 1 if cfg.channels == "gray" else 3
    elif conform_to is not None:
        channels = conform_to[0]
    else:
        channels = 3 if colour else 1
    if cfg.image_size != "auto":
        size = (cfg.image_size[0], cfg.image_size[1])
    elif conform_to is not None:
        size = conform_to[1:]
    else:
        size, note = auto_size(sizes, cfg.max_auto_side)
        notes += [note] if note else []
    if conform_to is not None and (channels, *size) == tuple(conform_to) and \
            any((h, w) != size for h, w in sizes):
        notes.append(f"images follow the dataset's shape {channels}x{size[0]}x{size[1]}")
    background = (cfg.alpha_background[0], cfg.alpha_background[1], cfg.alpha_background[2])
    return Target(channels, size, cfg.resize, background), notes


def fixed_target(cfg: IngestConfig, conform_to: Shape | None) -> Target | None:
    """The target when params fix it before any header is read (with auto, the headers or the
    dataset's shape decide, and the notes say how)."""
    fixed = cfg.channels != "auto" and cfg.image_size != "auto"
    return choose_target([], False, cfg, conform_to)[0] if fixed else None


def auto_size(sizes: list[tuple[int, int]], max_side: int) -> tuple[tuple[int, int], str | None]:
    """(H, W) for image_size auto: the shared size, else the median height and width (square
    when within 25%), scaled down to max_side; and the note saying so (None if all fit)."""
    counts = Counter(sizes)
    if len(counts) == 1:
        h, w = sizes[0]
        why = "the images' own size"
    else:
        h, w = statistics.median(s[0] for s in sizes), statistics.median(s[1] for s in sizes)
        if 0.8 <= h / w <= 1.25:
            h = w = (h + w) / 2
        lo, hi = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
        why = (f"median of {len(sizes)} images of {len(counts)} sizes, "
               f"{lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}")
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if scale < 1:
        why += f", scaled to ingest.max_auto_side {max_side}"
    if len(counts) == 1 and scale == 1:
        return size, None
    return size, f"image_size auto: {size[0]}x{size[1]} (HxW; {why})"


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) with C made 1 (PIL's L weights, so every format agrees) or 3 (repeated)."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    # PIL's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
    weights = np.array([19595, 38470, 7471], np.uint32)[:, None, None]
    return (((x.astype(np.uint32) * weights).sum(1) + 0x8000) >> 16).astype(np.uint8)[:, None]
