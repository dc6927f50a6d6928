"""Training throughput with the train split read from .npy shards (tasks.data.Images, the
pipeline's path) against the same split held in memory as one array, side by side: the same
fit loop, network, settings and batches, alternated runs, best of each.

Digits always (the bundled set, upscaled to the seed network's 28 px so a step costs what a
real one does); GTSRB at 64 px when EVERGREEN_GTSRB names the published data (BENCHMARKS.md).
The shards sit in the page cache after the first pass, as a dataset that fits in RAM does;
a set larger than RAM reads at the disk's speed instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.report import entry, not_run

GOAL = ">= 0.9"


def throughput(train, val, classes, cfg, runs: int) -> float:
    """Images/s of the best of `runs` fits of one epoch."""
    from tasks.train import FitSettings, fit
    from tasks.train.adapt import resolve_train
    from tasks.train.model import build_teacher

    cfg, augment, _ = resolve_train(cfg, train, classes)
    norm = ([0.5] * train[0].shape[1], [0.25] * train[0].shape[1])
    best = 0.0
    for _ in range(runs):
        model, _ = build_teacher(cfg, tuple(train[0].shape[1:]), len(classes), cfg.seed)
        start = time.perf_counter()
        fit(model, train, val, norm, FitSettings.from_train(cfg, augment))
        best = max(best, len(train[1]) / (time.perf_counter() - start))
    return best


def side_by_side(x: np.ndarray, y: np.ndarray, scratch: Path, name: str, cfg, runs: int) -> tuple:
    """(shards / memory images/s, both figures) on x split 90/10 into train and val."""
    from tasks.data.index import open_splits, write_arrays

    cut = len(x) * 9 // 10
    memory = {"train": (x[:cut], y[:cut]), "val": (x[cut:], y[cut:])}
    write_arrays(scratch / name, memory, max_bytes=16 * 2**20)  # several shards, as at scale
    shards = open_splits(scratch / name, ("train", "val"))
    classes = [str(c) for c in range(int(y.max()) + 1)]
    speeds = {"memory": 0.0, "shards": 0.0}
    for _ in range(runs):  # alternated, so load on the machine falls on both sides
        speeds["memory"] = max(speeds["memory"], throughput(*memory.values(), classes, cfg, 1))
        speeds["shards"] = max(speeds["shards"], throughput(*shards.values(), classes, cfg, 1))
    return speeds["shards"] / speeds["memory"], speeds


def gtsrb64(n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """n GTSRB training photos at 64 px (a seeded choice), or None without the data."""
    from bench.gtsrb import data_root
    from evergreen.config import IngestConfig
    from tasks.ingest import ReadLog, read_labelled

    root = data_root()
    if root is None:
        return None
    cfg = IngestConfig(channels="rgb", image_size=[64, 64])
    batch, _ = read_labelled(str(root / "Final_Training" / "Images"), cfg, None, ReadLog(), None)
    keep = np.sort(np.random.default_rng(0).permutation(len(batch))[:n])
    classes = sorted(set(batch.labels), key=int)
    return batch.x[keep], np.array([classes.index(c) for c in batch.labels[keep]])


def streaming(quick: bool, scratch: Path) -> dict:
    from bench.data import digits_sources, upscale_warped
    from evergreen.config import TrainConfig

    digits = digits_sources()["train"]
    x, src = upscale_warped(digits[0], 4_000 if quick else 12_000, seed=0)
    cfg = TrainConfig(epochs=1, threads=0)
    ratio, speeds = side_by_side(x, digits[1][src], scratch, "digits", cfg, 2 if quick else 3)
    out = {"stream_vs_memory_digits": entry(
        ratio, "ratio", f"{len(x)} digits at 28 px: {speeds['shards']:.0f} images/s from shards "
        f"vs {speeds['memory']:.0f} in memory", GOAL, ratio >= 0.9,
        **{k: round(v, 1) for k, v in speeds.items()})}
    photos = None if quick else gtsrb64(12_000)
    if photos is None:
        out["stream_vs_memory_gtsrb64"] = not_run(GOAL, "needs EVERGREEN_GTSRB (BENCHMARKS.md), "
                                                  "and the full run")
        return out
    ratio, speeds = side_by_side(*photos, scratch, "gtsrb64", cfg, 2)
    out["stream_vs_memory_gtsrb64"] = entry(
        ratio, "ratio", f"{len(photos[0])} GTSRB photos at 64 px: {speeds['shards']:.0f} images/s "
        f"from shards vs {speeds['memory']:.0f} in memory", GOAL, ratio >= 0.9,
        **{k: round(v, 1) for k, v in speeds.items()})
    return out
