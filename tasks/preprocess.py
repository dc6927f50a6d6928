"""Preprocess: deduplicate, split by content hash (or group), normalization statistics from train."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evergreen.config import PreprocessConfig
from evergreen.errors import BadInputError
from tasks.data import Images, chunks, subset

log = logging.getLogger("evergreen.preprocess")
SPLITS = ("train", "val", "test")


@dataclass
class Processed:
    """Splits as uint8 pixels and integer labels, plus what travels with the model."""

    splits: dict[str, tuple[Images | np.ndarray, np.ndarray]]  # images are read on demand
    classes: list[str]
    mean: list[float]  # per channel, pixels scaled to [0, 1]
    std: list[float]
    info: dict = field(default_factory=dict)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.splits["train"][0].shape[1:])


def sort_classes(labels) -> list[str]:
    """Distinct labels; numeric labels in numeric order ("2" before "10")."""
    distinct = sorted(set(map(str, labels)))
    if all(re.fullmatch(r"-?\d+", c) for c in distinct):
        return sorted(distinct, key=int)
    return distinct


def split_of(content_hash: str, salt: str, val_fraction: float, test_fraction: float) -> str:
    """A sample's split is a pure function of its content: adding data never moves it."""
    u = int(hashlib.sha256(f"{salt}:{content_hash}".encode()).hexdigest()[:12], 16) / 16**12
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def assign_splits(meta: pd.DataFrame, keep: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, dict]:
    """The split of each kept sample, drawn from its group or content hash (tasks.groups)."""
    from tasks.groups import split_keys

    keys, grouping = split_keys(meta, cfg)
    return np.array([split_of(k, cfg.split_salt, cfg.val_fraction, cfg.test_fraction)
                     for k in keys[keep]]), grouping


def deduplicate(meta: pd.DataFrame) -> tuple[np.ndarray, int, int]:
    """Indices to keep (first of each content hash); counts of repeats and label conflicts."""
    groups = meta.groupby("content_hash", sort=False)["label"].nunique()
    conflicted = set(groups[groups > 1].index)
    first = ~meta["content_hash"].duplicated(keep="first")
    keep = first & ~meta["content_hash"].isin(conflicted)
    return np.flatnonzero(keep.to_numpy()), int((~first).sum()), len(conflicted)


def channel_stats(x: Images | np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 pixels (N, C, H, W), scaled to [0, 1]: one pass in
    chunks, from exact per-channel histograms, so memory does not grow with the split."""
    hist = np.zeros((x.shape[1], 256), np.int64)
    for block in chunks(x):
        for c in range(x.shape[1]):
            hist[c] += np.bincount(block[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1)
    mean = hist @ values / n
    std = np.maximum(np.sqrt(np.maximum(hist @ values**2 / n - mean**2, 0.0)), 1e-6)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def preprocess(x: Images | np.ndarray, labels: np.ndarray, meta: pd.DataFrame,
               cfg: PreprocessConfig) -> Processed:
    """Deduplicate, split each sample by hash, compute train-only normalization."""
    keep, repeats, conflicts = deduplicate(meta)
    if repeats or conflicts:
        log.info("dropped %d repeated samples and %d hashes with conflicting labels",
                 repeats, conflicts)
    assign, grouping = assign_splits(meta, keep, cfg)
    x, labels = subset(x, keep), labels[keep]
    classes = sort_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(c)] for c in labels], dtype=np.int64)
    splits = {s: (subset(x, np.flatnonzero(assign == s)), y[assign == s]) for s in SPLITS}
    for name, (xs, _) in splits.items():
        if len(xs) == 0:
            raise BadInputError(f"preprocess: the {name} split is empty ({len(x)} samples); "
                                "add data or change preprocess.*_fraction")
    mean, std = channel_stats(splits["train"][0])
    info = {"samples": int(len(x)), "repeats_dropped": repeats, "label_conflicts_dropped": conflicts,
            "split_sizes": {s: int(len(v[0])) for s, v in splits.items()}, "groups": grouping}
    return Processed(splits, classes, mean, std, info)
