"""Drift of an incoming batch against the dataset: label shift (chi-square), pixel PSI, batch
size and duplicates, as one GX suite over a one-row summary, and which of them are shift."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evergreen.config import ValidateConfig

if TYPE_CHECKING:
    import great_expectations as gx
from tasks.validate.failures import _exception_message, _failure_line

# Pearson's chi-square needs about 5 expected samples per cell (Cochran); rarer classes are pooled.
_MIN_EXPECTED = 5.0


_PSI_BINS = 10


# Small batches get fewer bins: at 2 samples per bin, sampling noise alone gives PSI ~0.9 (over
# 0.25 for 86% of same-distribution batches of 20); at 20 per bin it stays under 0.25 (~0.1%).
_PSI_MIN_PER_BIN = 20


_PSI_EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite


# Each batch statistic the drift suite checks: (config key, ">=" lower bound or "<=" upper bound).
_DRIFT_THRESHOLDS = {
    "batch_size": ("min_batch_size", ">="),
    "duplicate_rate": ("max_duplicate_rate", "<="),
    "label_pvalue": ("min_label_shift_pvalue", ">="),
    "pixel_psi": ("max_pixel_psi", "<="),
}


# The statistics of distribution shift: they follow validate.on_drift. Batch size and
# duplicates are integrity checks: they refuse a batch whatever the policy.
SHIFT_STATISTICS = ("label_pvalue", "pixel_psi")


def _drift_suite(cfg: ValidateConfig, has_reference: bool) -> gx.ExpectationSuite:
    """One expectation per batch statistic; without a reference only the batch size is checked."""
    import great_expectations as gx

    e = gx.expectations
    expectations = []
    for column, (key, op) in _DRIFT_THRESHOLDS.items():
        if has_reference or column == "batch_size":
            bound = getattr(cfg, key)
            # On the one-row summary frame min and max are the statistic itself.
            if op == ">=":
                expectations.append(e.ExpectColumnMinToBeBetween(column=column, min_value=bound))
            else:
                expectations.append(e.ExpectColumnMaxToBeBetween(column=column, max_value=bound))
    return gx.ExpectationSuite(name="batch_drift", expectations=expectations)


def _drift_failure_lines(result: dict, stats: dict) -> list[tuple[str | None, str]]:
    """(statistic, line) per failed batch statistic, the line naming its value and the config
    threshold; the statistic is None when GX could not compute it (that always fails)."""
    lines = []
    for r in (r for r in result["results"] if not r["success"]):
        kwargs = r["expectation_config"]["kwargs"]
        if _exception_message(r["exception_info"]):
            lines.append((None, _failure_line(r)))
            continue
        column = kwargs["column"]
        key, op = _DRIFT_THRESHOLDS[column]
        failed = "<" if op == ">=" else ">"
        bound = kwargs.get("min_value", kwargs.get("max_value"))
        lines.append((column, _drift_line(column, stats, f"{failed} validate.{key} {bound:g}")))
    return lines


def _shift_checks(stats: dict, cfg: ValidateConfig) -> list[dict]:
    """The shift figures for the report: each statistic, its value, threshold and outcome
    (pass, warn or fail by validate.on_drift); none without a reference."""
    rows = []
    for column in SHIFT_STATISTICS:
        key, op = _DRIFT_THRESHOLDS[column]
        value, bound = stats[column], getattr(cfg, key)
        if value is None:
            continue
        within = value >= bound if op == ">=" else value <= bound
        outcome = "pass" if within else "warn" if cfg.on_drift == "warn" else "fail"
        rows.append({"statistic": column, "value": value, "threshold": f"{op} validate.{key} {bound:g}",
                     "result": outcome, "on_drift": cfg.on_drift})
    if stats["ks_statistic"] is not None:
        rows.append({"statistic": "ks_statistic", "value": stats["ks_statistic"],
                     "threshold": f"reported (p-value {stats['ks_pvalue']:.3g})", "result": "info",
                     "on_drift": cfg.on_drift})
    return rows


def _drift_line(column: str, s: dict, threshold: str) -> str:
    """The failure line of one batch statistic; `threshold` is e.g. '< validate.min_batch_size 10'."""
    if column == "batch_size":
        return f"batch size: {s['batch_size']} new samples {threshold}"
    if column == "duplicate_rate":
        incoming = s["batch_size"] + s["duplicates"]
        return (
            f"duplicate rate: {s['duplicate_rate']:.3g} {threshold} ({s['duplicates']} of "
            f"{incoming} incoming samples already in the dataset or repeated)"
        )
    if column == "label_pvalue":
        return (
            f"label shift: chi-square p-value {s['label_pvalue']:.2g} {threshold} "
            f"(batch labels {s['label_counts']}, expected proportions from "
            f"{s['reference_size']} reference samples)"
        )
    ks = "n/a"
    if s["ks_statistic"] is not None:
        ks = f"{s['ks_statistic']:.3g} (p-value {s['ks_pvalue']:.2g})"
    return (
        f"pixel shift: PSI of per-sample pixel_mean {s['pixel_psi']:.3g} {threshold} "
        f"(KS statistic {ks}; {s['pixel_bins']} quantile bins of the reference)"
    )


def _batch_statistics(new: pd.DataFrame, reference: pd.DataFrame, duplicates: int) -> dict:
    """Plain-JSON batch statistics; the shift statistics are None when there is no reference."""
    incoming = len(new) + duplicates
    labels = _column(new, "label")
    counts = {str(k): int(v) for k, v in labels.value_counts().items()}
    counts = dict(sorted(counts.items()))
    stats = {
        "batch_size": len(new),
        "duplicates": int(duplicates),
        "duplicate_rate": duplicates / incoming if incoming else 0.0,
        "label_chi2": None, "label_pvalue": None, "label_bins": None,
        "pixel_psi": None, "pixel_bins": None, "ks_statistic": None, "ks_pvalue": None,
        "label_counts": counts,
        "reference_size": len(reference),
    }  # fmt: skip
    if len(reference):
        chi2, pvalue, bins = label_shift(labels, _column(reference, "label"))
        stats |= {"label_chi2": chi2, "label_pvalue": pvalue, "label_bins": bins}
        stats |= pixel_shift(_finite(new, "pixel_mean"), _finite(reference, "pixel_mean"))
    return stats


def _column(meta: pd.DataFrame, name: str) -> pd.Series:
    """A column without its nulls; empty when the column is missing."""
    return meta[name].dropna() if name in meta else pd.Series(dtype=object)


def _finite(meta: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column's finite values as floats (nulls, inf and non-numbers left out)."""
    values = pd.to_numeric(_column(meta, name), errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def label_shift(labels: pd.Series, reference: pd.Series) -> tuple[float, float, int]:
    """Chi-square goodness of fit of the batch's label counts to the reference's proportions.

    Labels unknown to the reference are left out (the per-sample check reports them). Classes
    expected fewer than 5 times are pooled, rarest first, so the chi-square approximation holds;
    with fewer than 2 pooled cells (a one-class reference, or too few known labels for 10
    expected samples) there is nothing to test, and the result is chi2 0, p-value 1.

    Returns:
        (chi2, p-value, number of cells tested).
    """
    from scipy.stats import chisquare

    proportions = reference.value_counts(normalize=True)
    observed = labels.value_counts().reindex(proportions.index, fill_value=0).to_numpy(float)
    observed, expected = _pool_rare(observed, proportions.to_numpy() * observed.sum())
    if len(observed) < 2:
        return 0.0, 1.0, len(observed)
    result = chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue), len(observed)


def _pool_rare(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge classes, smallest expected count first, into cells of >= _MIN_EXPECTED expected
    samples; a remainder below that joins the last cell."""
    cells_obs, cells_exp, acc_obs, acc_exp = [], [], 0.0, 0.0
    for i in np.argsort(expected, kind="stable"):
        acc_obs, acc_exp = acc_obs + observed[i], acc_exp + expected[i]
        if acc_exp >= _MIN_EXPECTED:
            cells_obs.append(acc_obs)
            cells_exp.append(acc_exp)
            acc_obs = acc_exp = 0.0
    if acc_exp and cells_exp:
        cells_obs[-1] += acc_obs
        cells_exp[-1] += acc_exp
    elif acc_exp:
        cells_obs, cells_exp = [acc_obs], [acc_exp]
    return np.array(cells_obs), np.array(cells_exp)


def pixel_shift(batch: np.ndarray, reference: np.ndarray) -> dict:
    """PSI and two-sample KS of per-sample mean intensity; PSI 0 and no KS when a side is empty."""
    from scipy.stats import ks_2samp

    bins = min(_PSI_BINS, len(batch) // _PSI_MIN_PER_BIN)
    if not len(batch) or not len(reference):
        return {"pixel_psi": 0.0, "pixel_bins": 0, "ks_statistic": None, "ks_pvalue": None}
    ks = ks_2samp(batch, reference)
    return {"pixel_psi": _psi(batch, reference, bins), "pixel_bins": bins,
            "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}  # fmt: skip


def _psi(batch: np.ndarray, reference: np.ndarray, bins: int = _PSI_BINS) -> float:
    """Population stability index of `batch` over `bins` quantile bins of `reference`.

    Tied quantiles merge bins, and each bin's share is epsilon-smoothed so PSI stays finite.
    Fewer than 2 bins (a batch under 40 samples, at 20 per bin) tests nothing: PSI 0.
    """
    if bins < 2:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected, actual = _bin_shares(reference, edges), _bin_shares(batch, edges)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin [edge_i, edge_i+1) (open-ended at both ends), smoothed."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    shares = counts / len(values) + _PSI_EPSILON
    return shares / shares.sum()
