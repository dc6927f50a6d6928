"""Where a folder's decoded images go: an array in memory while the batch fits
ingest.max_batch_pixels, else shards in a staging folder on disk, written as the images come,
so memory stays bounded however large the folder is. The staged batch is read back as
tasks.data.Images: dedupe, metadata, landing and quarantine walk it in chunks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from evergreen.errors import BadInputError
from tasks.ingest.decode import Target

STAGING = ".staging"  # under data/: on the batches' file system, outside what DVC tracks
DISK_SLACK = 1.1  # the staged pixels, then the landed shards: twice the batch, and some room


def clear_staging(data_dir: Path) -> Path:
    """data/.staging/, emptied (what a killed ingest left); the workspace lock keeps it ours."""
    folder = data_dir / STAGING
    shutil.rmtree(folder, ignore_errors=True)
    return folder


class MemorySink:
    """The batch as one array; each image straight into its row."""

    def __init__(self, n: int, target: Target):
        self.x = np.empty((n, target.channels, *target.size), np.uint8)
        self.n = 0

    def put(self, image: np.ndarray) -> None:
        self.x[self.n] = image
        self.n += 1

    def images(self) -> np.ndarray:
        return self.x[:self.n]


class ShardSink:
    """The batch as shards in `folder`, a block of images at a time (memory: one shard)."""

    BLOCK = 1024

    def __init__(self, folder: Path, target: Target, shard_mb: int):
        from tasks.data import ShardWriter

        shutil.rmtree(folder, ignore_errors=True)
        self.folder = folder
        self.writer = ShardWriter(folder, "staged", shard_mb * 2**20)
        self.block = np.empty((self.BLOCK, target.channels, *target.size), np.uint8)
        self.k = 0

    def put(self, image: np.ndarray) -> None:
        self.block[self.k] = image
        self.k += 1
        if self.k == self.BLOCK:
            self._spill()

    def _spill(self) -> None:
        self.writer.add(self.block[:self.k].copy())  # the writer keeps it until its shard is full
        self.k = 0

    def images(self):
        """The staged images as tasks.data.Images (an empty array when every file was refused)."""
        from tasks.data import Images, ShardStore

        self._spill()
        self.writer.close()
        store = ShardStore(self.folder)
        if not len(store):
            return np.zeros((0, *self.block.shape[1:]), np.uint8)
        return Images([store], np.zeros(len(store), np.int32), np.arange(len(store)))


def sink_for(n: int, target: Target, max_values: int, staging: Path | None, shard_mb: int,
             shown: str):
    """Memory for a batch within max_values pixel values; above it, shards in `staging` (when
    the caller gave a staging folder and its disk has room), else refused before decoding."""
    values = n * target.channels * target.size[0] * target.size[1]
    what = f"{n} images at {target.channels}x{target.size[0]}x{target.size[1]}"
    if values <= max_values:
        return MemorySink(n, target)
    if staging is None:
        raise BadInputError(f"{shown}: {what}: {values} pixel values to hold, more than "
                            f"ingest.max_batch_pixels {max_values}; split the source into "
                            "batches or raise the limit")
    staging.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(staging).free
    if free < values * 2 * DISK_SLACK:
        raise BadInputError(f"{shown}: {what} need {values * 2 * DISK_SLACK / 1e9:.1f} GB on disk "
                            f"to stage and land, {free / 1e9:.1f} GB free at {staging}; free some "
                            "space or split the source")
    return ShardSink(staging / "batch", target, shard_mb)
