"""Live drift: each window of served inputs against the champion's data, with the statistics
ingest uses (tasks.validate): PSI and KS of per-image mean intensity against the champion's
training images, and a chi-square test of the predicted classes against its predictions on
its test split. Windows are tumbling, so one window is one test, not many overlapping ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class DriftReference:
    """What served inputs are compared with: one champion's pixel means and predicted classes."""

    version: str
    pixel_means: np.ndarray  # per training image
    predicted: pd.Series  # class names predicted on the test split


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
    from tasks.validate import label_shift, pixel_shift

    pixels = pixel_shift(means, reference.pixel_means)
    chi2, pvalue, cells = label_shift(pd.Series(classes), reference.predicted)
    reasons = []
    if pixels["pixel_psi"] > max_psi:
        reasons.append(f"pixel shift: PSI of per-image mean {pixels['pixel_psi']:.3g} > "
                       f"validate.max_pixel_psi {max_psi:g}")
    if pvalue < min_pvalue:
        reasons.append(f"predicted-class shift: chi-square p-value {pvalue:.2g} < "
                       f"validate.min_label_shift_pvalue {min_pvalue:g}")
    counts = pd.Series(classes).value_counts()
    return {"version": reference.version, "samples": len(means), **pixels,
            "class_chi2": chi2, "class_pvalue": pvalue, "class_cells": cells,
            "predicted_counts": {str(k): int(v) for k, v in counts.items()},
            "mean_intensity": float(means.mean()), "drifted": bool(reasons), "reasons": reasons}


def pixel_means(x: np.ndarray) -> np.ndarray:
    """Per-image mean intensity of uint8 (N, C, H, W), as ingest's metadata records it."""
    return x.reshape(len(x), -1).mean(axis=1)
