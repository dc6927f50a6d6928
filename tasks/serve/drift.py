"""Live drift: each window of served inputs against the champion's data, with the statistics
ingest uses (tasks.validate): PSI and KS of per-image mean intensity against the champion's
training images, and a chi-square test of the predicted classes against its predictions on
its test split. That reference is a sample too (a few thousand predictions at most), so the
class test is the two-sample one (homogeneity of a 2 x classes table), not a goodness of fit
to the reference's proportions as if they were exact: on 200 reference predictions the latter
fired on unshifted windows of 500. Windows are tumbling: one window, one test."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd


@dataclass
class DriftReference:
    """What served inputs are compared with: one champion's pixel means and predicted classes."""

    version: str
    pixel_means: np.ndarray  # per training image
    predicted: pd.Series  # class names predicted on the test split

    @cached_property
    def class_counts(self) -> pd.Series:
        """How often each class was predicted (counted once: every window is tested against it)."""
        return self.predicted.value_counts()


@dataclass
class DriftMonitor:
    """Collects served inputs; every `window` of them gives a report (`add` returns it)."""

    reference: DriftReference
    window: int
    max_psi: float  # validate.max_pixel_psi
    min_pvalue: float  # validate.min_label_shift_pvalue
    means: list = field(default_factory=list)
    classes: list = field(default_factory=list)

    def add(self, pixel_means: np.ndarray, predicted: list[str]) -> dict | None:
        self.means.extend(float(m) for m in pixel_means)
        self.classes.extend(predicted)
        if len(self.means) < self.window:
            return None
        means, classes = np.array(self.means[:self.window]), self.classes[:self.window]
        del self.means[:self.window], self.classes[:self.window]
        return window_report(means, classes, self.reference, self.max_psi, self.min_pvalue)


def window_report(means: np.ndarray, classes: list[str], reference: DriftReference,
                  max_psi: float, min_pvalue: float) -> dict:
    """The window's figures, whether they drifted, and a line per statistic past its threshold."""
    from tasks.validate import pixel_shift

    pixels = pixel_shift(means, reference.pixel_means)
    names, counts = np.unique(np.asarray(classes, str), return_counts=True)
    chi2, pvalue, cells = class_shift(pd.Series(counts, names), reference.class_counts)
    reasons = []
    if pixels["pixel_psi"] > max_psi:
        reasons.append(f"pixel shift: PSI of per-image mean {pixels['pixel_psi']:.3g} > "
                       f"validate.max_pixel_psi {max_psi:g}")
    if pvalue < min_pvalue:
        reasons.append(f"predicted-class shift: chi-square p-value {pvalue:.2g} < "
                       f"validate.min_label_shift_pvalue {min_pvalue:g}")
    return {"version": reference.version, "samples": len(means), **pixels,
            "class_chi2": chi2, "class_pvalue": pvalue, "class_cells": cells,
            "predicted_counts": {str(k): int(v) for k, v in zip(names, counts, strict=True)},
            "mean_intensity": float(means.mean()), "drifted": bool(reasons), "reasons": reasons}


def pixel_means(x: np.ndarray) -> np.ndarray:
    """Per-image mean intensity of uint8 (N, C, H, W), as ingest's metadata records it."""
    return x.reshape(len(x), -1).mean(axis=1)


MIN_EXPECTED = 5.0  # per cell of the 2 x classes table; rarer classes are pooled into one


def class_shift(window: pd.Series, reference: pd.Series) -> tuple[float, float, int]:
    """Chi-square test of homogeneity of the window's and the reference's class counts (each a
    Series of counts by class name): (chi2, p-value, class cells tested); classes with few
    expected samples are pooled, and with fewer than 2 cells there is nothing to test (0, 1)."""
    from scipy.stats import chi2_contingency

    classes = window.index.union(reference.index)
    table = np.stack([window.reindex(classes, fill_value=0).to_numpy(float),
                      reference.reindex(classes, fill_value=0).to_numpy(float)])  # (2, classes)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    rare = expected.min(0) < MIN_EXPECTED
    if rare.any():  # one pooled cell, kept when it is big enough to test
        pooled, table = table[:, rare].sum(1, keepdims=True), table[:, ~rare]
        if expected[:, rare].sum(1).min() >= MIN_EXPECTED:
            table = np.c_[table, pooled]
    if table.shape[1] < 2:
        return 0.0, 1.0, int(table.shape[1])
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(table.shape[1])
