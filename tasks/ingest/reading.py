"""What every reader shares: the Batch it returns, what it refused or skipped, how names are
shown, and the policy that gives every image of a batch one shape (channels, size)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.decode import Target
from tasks.ingest.safe_files import Opened, SourceFiles, display_name

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass
class Batch:
    """Images as uint8 (N, C, H, W), string labels (N,), where each sample came from and how
    it was decoded."""

    x: np.ndarray
    labels: np.ndarray
    sources: list[str]
    decoded: list[str] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, keep: np.ndarray) -> Batch:
        index = np.flatnonzero(keep)
        decoded = None if self.decoded is None else [self.decoded[i] for i in index]
        return Batch(self.x[keep], self.labels[keep], [self.sources[i] for i in index], decoded)


@dataclass
class Rejected:
    """One sample (or file) refused or skipped: where it came from and why."""

    source: str  # file, file[index] or file:line
    reason: str


@dataclass
class ReadLog:
    """What a read saw besides samples: the files it opened, those it skipped, what it chose."""

    opened: list[Opened] = field(default_factory=list)
    skipped: list[Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Names:
    """How paths are shown to the user: relative to `base`, behind `prefix` ('a.zip:'),
    with control and undecodable characters escaped (display_name)."""

    base: Path
    prefix: str = ""

    def __call__(self, path: Path) -> str:
        rel = relative(path, self.base)
        return display_name(self.prefix + rel if rel else self.prefix.rstrip(":") or str(path))


def relative(path: Path, base: Path) -> str:
    """path relative to base, '/'-separated, '' for base itself (string slicing: pathlib is slow);
    the whole path when it lies elsewhere (a name is shown, never an error raised)."""
    text, start = str(path), str(base).rstrip(os.sep) + os.sep
    if text.startswith(start):
        rel = text[len(start):]
    elif text == str(base):
        rel = ""
    else:
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = text
    return "" if rel == "." else rel.replace(os.sep, "/")


@dataclass
class Reading:
    """One read in progress: its config, the file opener for its root, and its log."""

    cfg: IngestConfig
    files: SourceFiles
    names: Names
    log: ReadLog
    conform_to: Shape | None = None  # the dataset's shape: later batches follow it

    def inside(self, root: Path, prefix: str) -> Reading:
        """The same read over an extracted archive: its own root, names behind the prefix."""
        files = SourceFiles(root, self.cfg.read_timeout_s)  # temporary copies: not recorded
        return Reading(self.cfg, files, Names(root, prefix), self.log, self.conform_to)

    def budget(self, values: int, what: str, shown: str) -> None:
        """Refuse, before decoding, a batch that would hold more than max_batch_pixels values."""
        if values > self.cfg.max_batch_pixels:
            raise BadInputError(f"{shown}: {what}: {values} pixel values to hold, more than "
                                f"ingest.max_batch_pixels {self.cfg.max_batch_pixels}; split the "
                                "source into batches or raise the limit")


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
