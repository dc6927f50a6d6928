"""What every reader shares: the Batch it returns, what it refused or skipped, and the read in
progress (config, safe file opener, names, log)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.names import Names
from tasks.ingest.safe_files import Opened, SourceFiles

Shape = tuple[int, int, int]  # (C, H, W)
MAX_LABEL = 200  # characters in a label, for every format


@dataclass
class Batch:
    """Images as uint8 (N, C, H, W) (an array, or tasks.data.Images when staged on disk),
    string labels (N,), where each sample came from and how it was decoded."""

    x: np.ndarray
    labels: np.ndarray
    sources: list[str]
    decoded: list[str] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def take(self, keep: np.ndarray) -> Batch:
        """The samples where `keep` is true (staged images: a view, nothing read)."""
        from tasks.data import subset

        index = np.flatnonzero(keep)
        decoded = None if self.decoded is None else [self.decoded[i] for i in index]
        return Batch(subset(self.x, index), self.labels[keep], [self.sources[i] for i in index],
                     decoded)


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


@dataclass
class Reading:
    """One read in progress: its config, the file opener for its root, and its log."""

    cfg: IngestConfig
    files: SourceFiles
    names: Names
    log: ReadLog
    conform_to: Shape | None = None  # the dataset's shape: later batches follow it
    staging: Path | None = None  # where a folder past max_batch_pixels is staged (None: refused)

    def inside(self, root: Path, prefix: str) -> Reading:
        """The same read over an extracted archive: its own root, names behind the prefix."""
        files = SourceFiles(root, self.cfg.read_timeout_s)  # temporary copies: not recorded
        return Reading(self.cfg, files, Names(root, prefix), self.log, self.conform_to,
                       self.staging)

    def budget(self, values: int, what: str, shown: str) -> None:
        """Refuse, before decoding, a batch read from one file (IDX, NPZ, CSV) that would hold
        more than max_batch_pixels values."""
        if values > self.cfg.max_batch_pixels:
            raise BadInputError(f"{shown}: {what}: {values} pixel values to hold, more than "
                                f"ingest.max_batch_pixels {self.cfg.max_batch_pixels}; split the "
                                "source into batches or raise the limit")


Read = tuple[Batch, list[Rejected]]  # the samples read, and those refused with why
