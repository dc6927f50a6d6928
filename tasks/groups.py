"""Split groups: samples that must fall on the same side of the train/val/test split.

Frames of one video, or photos of one physical object taken in a burst, are near-copies of
each other. Split one by one, they land on both sides and the test split scores memory, not
generalization: GTSRB's 30 frames per track gave an internal test accuracy of 0.997 against
0.959 on its official test set. Files named `<group>_<n>` in such a set say which belong
together, so a batch whose names show that structure is split by group instead.

The decision is made per batch, from that batch's own file names only. A batch never
changes once landed, so a sample's split stays a pure function of the batch it came in,
and adding data never moves an old sample.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from evergreen.config import PreprocessConfig

# `<group><sep><number>` at the end of the file's stem: 00012_00029, vid3-frame-0017, cat.12
NUMBERED = re.compile(r"^(?P<group>.*?\D)[_\-. ]?(?P<n>\d+)$")
MIN_MATCHED = 0.9  # share of a batch's names that must follow the pattern
MIN_GROUP_SIZE = 2.0  # mean members per group: single files are no groups
MIN_GROUPS_PER_CLASS = 3  # fewer (IMG_1234 style camera names) say nothing about objects
MIN_GROUPS = 100  # so that every split gets groups (no val group among 100: p = 0.9**100)


def group_key(source: str, label: str, pattern: re.Pattern) -> str | None:
    """The group a source file names (class, folder and stem prefix), None if none."""
    path = PurePosixPath(str(source).replace("\\", "/"))
    found = pattern.match(path.stem)
    return f"{label}/{path.parent}/{found['group']}" if found else None


def batch_groups(sources: pd.Series, labels: pd.Series, pattern: re.Pattern) -> np.ndarray | None:
    """Each sample's group key when this batch's names show groups, else None."""
    keys = np.array([group_key(s, lb, pattern) for s, lb in zip(sources, labels, strict=True)],
                    dtype=object)
    named = keys[keys != None]  # noqa: E711 (elementwise)
    if len(keys) == 0 or len(named) < MIN_MATCHED * len(keys):
        return None
    groups = pd.Series(named).value_counts()
    classes = pd.Series(labels).nunique()
    if groups.mean() < MIN_GROUP_SIZE or len(groups) < max(MIN_GROUPS, MIN_GROUPS_PER_CLASS * classes):
        return None
    return keys


def split_keys(meta: pd.DataFrame, cfg: PreprocessConfig) -> tuple[np.ndarray, dict]:
    """The key each sample's split is drawn from: its group where its batch has groups
    (preprocess.group_split), else its content hash; and a summary of what was grouped."""
    keys = meta["content_hash"].to_numpy(dtype=object).copy()
    summary = {"mode": cfg.group_split, "grouped_batches": [], "groups": 0}
    if cfg.group_split == "off" or meta.empty or "source" not in meta.columns:
        return keys, summary
    pattern = re.compile(cfg.group_pattern) if cfg.group_pattern else NUMBERED
    batch_ids = meta["batch_id"] if "batch_id" in meta.columns else pd.Series([""] * len(meta))
    for batch_id, rows in meta.groupby(batch_ids.to_numpy(), sort=False).indices.items():
        groups = batch_groups(meta["source"].iloc[rows], meta["label"].iloc[rows].astype(str),
                              pattern)
        if groups is None:
            continue
        named = groups != None  # noqa: E711
        keys[rows[named]] = ["group:" + g for g in groups[named]]
        summary["grouped_batches"].append(str(batch_id))
        summary["groups"] += int(pd.Series(groups[named]).nunique())
    return keys, summary
