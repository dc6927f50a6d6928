"""Validate stage: Great Expectations suites over the per-sample metadata table, for the
whole dataset (validate_metadata) and for an incoming batch against it (validate_batch).

great_expectations and scipy take seconds to import, so they are imported inside the
functions that use them; importing this module stays fast.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evergreen.config import ValidateConfig
from evergreen.workspace import write_json

if TYPE_CHECKING:
    import great_expectations as gx

SAMPLE_COLUMNS = (
    "content_hash", "label", "height", "width", "channels",
    "pixel_min", "pixel_max", "pixel_mean", "source", "batch_id",
)  # fmt: skip
# Sample results name the offending rows by hash; GX keeps the first 20 per expectation.
_SAMPLES_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["content_hash"]}
# Class results list every failing class with its count (one row per class, so small).
_CLASSES_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["label", "count"]}
# Batch statistics are one summary row; each expectation's observed value is the statistic.
_DRIFT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": []}
# count / max_count is compared with 1 / max_class_imbalance; allow float rounding at equality.
_BALANCE_TOLERANCE = 1e-9
# Pearson's chi-square needs about 5 expected samples per cell (Cochran); rarer classes are pooled.
_MIN_EXPECTED = 5.0
_PSI_BINS = 10
# Small batches get fewer bins: at 2 samples per bin, sampling noise alone gives PSI ~0.9 (over
# 0.25 for 86% of same-distribution batches of 20); at 20 per bin it stays under 0.25 (~0.1%).
_PSI_MIN_PER_BIN = 20
_PSI_EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
_MAX_LISTED = 20  # unknown labels named in one failure line
# The one-shape check of a table without a reference, as failure lines name it.
_SHAPE_COUNT = "expect_column_unique_value_count_to_be_between(shape)"


@dataclass
class ValidationReport:
    """Outcome of the validate stage: pass/fail, one line per failure, JSON-ready results, and
    one line per distribution shift that did not fail the batch (validate.on_drift: warn)."""

    success: bool
    failures: list[str]
    results: dict
    warnings: list[str] = field(default_factory=list)


def validate_metadata(
    meta: pd.DataFrame, cfg: ValidateConfig, classes: list[str] | None = None
) -> ValidationReport:
    """Run the samples and classes suites over `meta`; classes default to its sorted labels."""
    if meta.empty:
        return _report({}, ["no samples: the metadata table has 0 rows"], {"rows": 0})
    samples = _samples_frame(meta)
    if classes is None:
        labels = meta["label"].dropna().unique().tolist() if "label" in meta else []
        classes = sorted(labels, key=str)
    summary = _class_summary(meta, classes)
    context = _gx_context()
    samples_suite = _samples_suite(samples, cfg, classes)
    samples_result = _run_suite(context, samples, samples_suite, _SAMPLES_FORMAT)
    classes_result = _run_suite(context, summary, _classes_suite(cfg), _CLASSES_FORMAT)
    shapes = samples["shape"].value_counts().to_dict()
    failures = _sample_failure_lines(samples_result, {_SHAPE_COUNT: f"; shapes {shapes}"})
    failures += _class_failure_lines(classes_result, cfg, max(summary["count"], default=0))
    suites = {"samples": samples_result, "classes": classes_result}
    return _report(suites, failures, _statistics(samples, summary))


def validate_batch(
    new: pd.DataFrame, reference: pd.DataFrame, cfg: ValidateConfig, duplicates: int = 0
) -> ValidationReport:
    """Check an incoming batch sample by sample, then as a whole against the reference dataset.

    Args:
        new: metadata rows of the batch (SAMPLE_COLUMNS), samples already in the dataset removed.
        reference: metadata of the current dataset. Empty for a first batch: then only the
            per-sample checks (one shape within the batch, any labels) and the minimum batch
            size apply.
        duplicates: incoming samples dropped as already present or repeated in the batch.
    """
    if duplicates < 0:
        raise ValueError(f"duplicates must be >= 0, got {duplicates}")
    samples = _samples_frame(new)
    classes = _sorted_labels(reference) if len(reference) else []
    shapes = sorted(_samples_frame(_dims(reference))["shape"].dropna().unique())
    stats = _batch_statistics(new, reference, duplicates)
    context = _gx_context()
    suite = _batch_samples_suite(samples, cfg, classes, shapes)
    samples_result = _run_suite(context, samples, suite, _SAMPLES_FORMAT)
    drift = pd.DataFrame({k: [stats[k]] for k in _DRIFT_THRESHOLDS})
    drift_result = _run_suite(context, drift, _drift_suite(cfg, len(reference) > 0), _DRIFT_FORMAT)
    notes = _batch_notes(samples, classes, shapes)
    drift_lines = _drift_failure_lines(drift_result, stats)
    # distribution shift of well-formed data: a reason to retrain (warn), or to refuse
    shifted = [line for column, line in drift_lines if column in SHIFT_STATISTICS]
    warnings = shifted if cfg.on_drift == "warn" else []
    failures = _sample_failure_lines(samples_result, notes) + \
        [line for column, line in drift_lines if column not in SHIFT_STATISTICS or not warnings]
    suites = {"batch_samples": samples_result, "batch_drift": drift_result}
    report = _report(suites, failures, stats, warnings)
    report.results["drift"] = _shift_checks(stats, cfg)
    return report


def render_html(report: ValidationReport, title: str) -> str:
    """A self-contained HTML page of a report: verdict, failures, one table per suite, statistics."""
    verdict = "PASS" if report.success else "FAIL"
    failures = "".join(f"<li>{_esc(line)}</li>" for line in report.failures) or "<li>none</li>"
    suites = report.results.get("suites", {})
    # shift statistics kept as warnings (validate.on_drift: warn) show as such, not as failures
    warned = frozenset(r["statistic"] for r in report.results.get("drift", []) if r["result"] == "warn")
    headline = f"{verdict}: {len(report.failures)} failure(s)"
    if report.warnings:
        headline += f", {len(report.warnings)} drift warning(s)"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_HTML_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="verdict {"warn" if report.success and report.warnings else verdict.lower()}">'
        f"{headline}</p>",
        f"<h2>Failures</h2><ul>{failures}</ul>",
        _warnings_html(report.warnings),
        *(_suite_html(name, result, warned) for name, result in suites.items()),
        _statistics_html(report.results.get("statistics", {})),
        *(_extra_html(k, v) for k, v in report.results.items() if k not in _REPORT_KEYS),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_report(report: ValidationReport, path: Path) -> None:
    """Write `report.results` as indented JSON, atomically; load times are dropped so the
    same data gives the same file (DVC sees no change)."""
    # NaN and +-inf (e.g. a sample's pixel_mean quoted by GX) become strings: strict JSON.
    results = json.loads(json.dumps(report.results, default=str), parse_constant=str)
    for suite in results.get("suites", {}).values():
        suite.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    write_json(Path(path), results)


def _report(suites: dict, failures: list[str], statistics: dict,
            warnings: list[str] | None = None) -> ValidationReport:
    """Bundle suite results into a report; it passes only with suites run and nothing failed
    (a failed shift expectation kept as a warning fails no suite of the report)."""
    warnings = list(warnings or [])
    success = bool(suites) and not failures and \
        (bool(warnings) or all(r["success"] for r in suites.values()))
    results = {"suites": suites, "success": success, "failures": failures, "warnings": warnings}
    return ValidationReport(success, failures, results | {"statistics": statistics}, warnings)


def _samples_frame(meta: pd.DataFrame) -> pd.DataFrame:
    """Copy of `meta` with a derived `shape` column "CxHxW" (null where a dimension is null)."""
    samples = meta.copy()
    dims = [c for c in ("channels", "height", "width") if c in samples]
    if len(dims) < 3:
        samples["shape"] = None
        return samples
    complete = samples[dims].notna().all(axis=1)
    c, h, w = (_dim_text(samples[d]) for d in dims)
    samples["shape"] = (c + "x" + h + "x" + w).where(complete, None)
    return samples


def _dim_text(dim: pd.Series) -> pd.Series:
    """A dimension column as text ("8", not "8.0" when nulls made it float; as-is if not whole)."""
    try:
        return dim.astype("Int64").astype(str)
    except (TypeError, ValueError):
        return dim.astype(str)


def _class_summary(meta: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per class: label, count (0 for a class with no samples), balance = count / max."""
    counts = meta["label"].value_counts() if "label" in meta else pd.Series(dtype=int)
    counts = counts.reindex(classes, fill_value=0).astype(int)
    summary = pd.DataFrame({"label": counts.index.astype(str), "count": counts.to_numpy()})
    largest = counts.max() if len(counts) else 0
    # With no samples at all, every class reports too few; imbalance adds nothing.
    summary["balance"] = summary["count"] / largest if largest else 1.0
    return summary


def _sorted_labels(meta: pd.DataFrame) -> list[str]:
    """The distinct non-null labels of a metadata table, sorted as text."""
    labels = meta["label"].dropna().unique().tolist() if "label" in meta else []
    return sorted(labels, key=str)


def _dims(meta: pd.DataFrame) -> pd.DataFrame:
    """The distinct (channels, height, width) rows of `meta`; a missing column reads as null."""
    return meta.reindex(columns=["channels", "height", "width"]).drop_duplicates()


def _samples_suite(
    samples: pd.DataFrame, cfg: ValidateConfig, classes: list[str]
) -> gx.ExpectationSuite:
    """Expectations per sample: columns, labels, no nulls, one shape, pixel range, unique hash."""
    import great_expectations as gx

    e = gx.expectations
    expectations = [
        e.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes)),
        e.ExpectColumnUniqueValueCountToBeBetween(column="shape", min_value=1, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=cfg.min_pixel),
        e.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=cfg.max_pixel),
    ]
    return _column_suite("samples", _basic_expectations() + expectations, samples.columns)


def _batch_samples_suite(
    samples: pd.DataFrame, cfg: ValidateConfig, classes: list[str], shapes: list[str]
) -> gx.ExpectationSuite:
    """Expectations per incoming sample: the basics, the reference's shape (one shape when there
    is no reference), pixel statistics in range and finite, labels known to the reference."""
    import great_expectations as gx

    e = gx.expectations
    if shapes:
        shape = e.ExpectColumnValuesToBeInSet(column="shape", value_set=shapes)
    else:  # no max 1 but no min: an empty batch is reported by the batch size alone
        shape = e.ExpectColumnUniqueValueCountToBeBetween(column="shape", max_value=1)
    # Bounds on the mean also reject +-inf; NaN is a null, reported by the not-null check.
    pixels = [
        e.ExpectColumnValuesToBeBetween(column=c, min_value=cfg.min_pixel, max_value=cfg.max_pixel)
        for c in ("pixel_min", "pixel_max", "pixel_mean")
    ]
    expectations = [*_basic_expectations(), shape, *pixels]
    if classes and cfg.new_classes == "reject":
        expectations.append(e.ExpectColumnValuesToBeInSet(column="label", value_set=classes))
    return _column_suite("batch_samples", expectations, samples.columns)


def _basic_expectations() -> list:
    """Expectations every sample table meets: the columns, text labels, no nulls, unique hashes."""
    import great_expectations as gx

    e = gx.expectations
    return [
        e.ExpectTableColumnsToMatchSet(column_set=list(SAMPLE_COLUMNS), exact_match=False),
        e.ExpectColumnValuesToBeOfType(column="label", type_="str"),
        e.ExpectColumnValuesToMatchRegex(column="label", regex=r"\S"),  # non-empty, not blank
        e.ExpectColumnValuesToBeUnique(column="content_hash"),
        *(e.ExpectColumnValuesToNotBeNull(column=c) for c in SAMPLE_COLUMNS),
    ]


def _column_suite(name: str, expectations: list, columns: pd.Index) -> gx.ExpectationSuite:
    """A suite of the expectations whose column is present in `columns`."""
    import great_expectations as gx

    # A missing column is reported once, by the column-set expectation, not once per check.
    present = [x for x in expectations if getattr(x, "column", None) in (None, *columns)]
    return gx.ExpectationSuite(name=name, expectations=present)


def _classes_suite(cfg: ValidateConfig) -> gx.ExpectationSuite:
    """Expectations on the per-class summary: enough samples, bounded imbalance."""
    import great_expectations as gx

    e = gx.expectations
    min_balance = 1.0 / cfg.max_class_imbalance - _BALANCE_TOLERANCE
    return gx.ExpectationSuite(
        name="classes",
        expectations=[
            e.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_samples_per_class),
            e.ExpectColumnValuesToBeBetween(column="balance", min_value=min_balance),
        ],
    )


def _gx_context() -> Any:
    """An in-memory GX context: no analytics, no progress bars, no docs site."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types import base

    config = base.DataContextConfig(
        analytics_enabled=False,
        progress_bars=base.ProgressBarsConfig(globally=False, metric_calculations=False),
        store_backend_defaults=base.InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(context: Any, frame: pd.DataFrame, suite: gx.ExpectationSuite, fmt: dict) -> dict:
    """Validate `frame` against `suite` as one whole-dataframe batch; return the JSON dict."""
    index_columns = [c for c in fmt["unexpected_index_column_names"] if c in frame]
    asset = context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
    batch = asset.add_batch_definition_whole_dataframe(suite.name).get_batch(
        batch_parameters={"dataframe": frame}
    )
    fmt = fmt | {"unexpected_index_column_names": index_columns}
    return batch.validate(suite, result_format=fmt).to_json_dict()


def _sample_failure_lines(result: dict, notes: dict[str, str]) -> list[str]:
    """One line per failed sample expectation, with the note kept for its name, if any."""
    return [_failure_line(r, notes) for r in result["results"] if not r["success"]]


def _batch_notes(samples: pd.DataFrame, classes: list[str], shapes: list[str]) -> dict[str, str]:
    """Notes for the batch's shape and label lines: the shapes seen and the unknown labels."""
    seen = samples["shape"].value_counts().to_dict()
    known = set(classes)
    unknown = [label for label in _sorted_labels(samples) if label not in known]
    more = f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
    return {
        _SHAPE_COUNT: f"; batch shapes {seen}",
        "expect_column_values_to_be_in_set(shape)": f"; batch shapes {seen}, dataset shape {shapes}",
        "expect_column_values_to_be_in_set(label)": (
            f"; unknown labels {unknown[:_MAX_LISTED]}{more}, dataset classes {classes}"
        ),
    }


def _failure_line(r: dict, notes: dict[str, str] | None = None) -> str:
    """'expectation(column): observed, expected' for one failed GX result, plus its note."""
    kwargs, res = r["expectation_config"]["kwargs"], r["result"]
    column = kwargs.get("column")
    name = r["expectation_config"]["type"] + (f"({column})" if column else "")
    error = _exception_message(r["exception_info"])
    if error:
        return f"{name}: raised {error}"
    if name.startswith("expect_column_values_to_not_be_null"):
        return f"{name}: {res['unexpected_count']} null values in {res['element_count']} rows"
    if "unexpected_count" in res:
        examples = list(dict.fromkeys(res.get("partial_unexpected_list", [])))[:5]
        observed = f"{res['unexpected_count']} unexpected values, e.g. {examples}"
    elif "mismatched" in res.get("details", {}):
        observed = f"missing columns {res['details']['mismatched'].get('missing', [])}"
    else:
        observed = f"observed {res.get('observed_value')}"
    return f"{name}: {observed}{_expected(kwargs)}{(notes or {}).get(name, '')}"


def _expected(kwargs: dict) -> str:
    """', expected >= a and <= b' from an expectation's bounds ('' when it has none)."""
    ops = (("min_value", ">="), ("max_value", "<="))
    bounds = [f"{op} {kwargs[k]}" for k, op in ops if kwargs.get(k) is not None]
    return f", expected {' and '.join(bounds)}" if bounds else ""


def _exception_message(info: dict) -> str | None:
    """The message of an exception GX caught while computing a result, if any."""
    # GX nests the info under metric ids when a metric raised, and keeps it flat otherwise.
    for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if entry.get("raised_exception"):
            return entry.get("exception_message")
    return None


def _class_failure_lines(result: dict, cfg: ValidateConfig, max_count: int) -> list[str]:
    """One line per class that has too few samples or is too rare next to the largest class."""
    lines = []
    for r in (r for r in result["results"] if not r["success"]):
        column = r["expectation_config"]["kwargs"]["column"]
        rows = r["result"].get("unexpected_index_list")
        if _exception_message(r["exception_info"]) or not rows:
            lines.append(_failure_line(r))
        for row in rows or []:
            label, count = row["label"], row["count"]
            if column == "count":
                lines.append(
                    f"min samples per class: class '{label}' has {count} samples, "
                    f"expected >= {cfg.min_samples_per_class}"
                )
            else:
                ratio = f"{max_count / count:.2f}x" if count else "inf"
                lines.append(
                    f"max class imbalance: class '{label}' has {count} samples vs {max_count} in "
                    f"the largest class ({ratio}), expected <= {cfg.max_class_imbalance}x"
                )
    return lines


def _statistics(samples: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """Plain-JSON counts for the report: rows, per-class counts, shapes, pixel range, imbalance."""
    counts = dict(zip(summary["label"], summary["count"].astype(int).tolist(), strict=True))
    smallest, largest = min(counts.values(), default=0), max(counts.values(), default=0)
    return {
        "rows": len(samples),
        "classes": counts,
        "shapes": {str(k): int(v) for k, v in samples["shape"].value_counts().items()},
        "pixel_min": _as_int(samples.get("pixel_min"), "min"),
        "pixel_max": _as_int(samples.get("pixel_max"), "max"),
        "imbalance": largest / smallest if smallest else None,
    }


def _as_int(column: pd.Series | None, how: str) -> int | None:
    """min or max of a column as a plain int, None when the column is missing or empty."""
    value = None if column is None else getattr(column, how)()
    return None if value is None or pd.isna(value) else int(value)


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
        chi2, pvalue, bins = _label_shift(labels, _column(reference, "label"))
        stats |= {"label_chi2": chi2, "label_pvalue": pvalue, "label_bins": bins}
        stats |= _pixel_shift(_finite(new, "pixel_mean"), _finite(reference, "pixel_mean"))
    return stats


def _column(meta: pd.DataFrame, name: str) -> pd.Series:
    """A column without its nulls; empty when the column is missing."""
    return meta[name].dropna() if name in meta else pd.Series(dtype=object)


def _finite(meta: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column's finite values as floats (nulls, inf and non-numbers left out)."""
    values = pd.to_numeric(_column(meta, name), errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _label_shift(labels: pd.Series, reference: pd.Series) -> tuple[float, float, int]:
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


def _pixel_shift(batch: np.ndarray, reference: np.ndarray) -> dict:
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


_HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}td{font-family:monospace;word-break:break-word;max-width:40em}"
    ".verdict{font-size:1.5em;font-weight:bold;padding:.5em 1em;color:#fff}"
    ".pass{background:#2e7d32}.fail{background:#c62828}.warn{background:#e08a00}"
    "td.pass,td.fail,td.warn{color:#fff;font-weight:bold}"
)
# Results keys every report has; callers may add others (e.g. the files dropped at ingest).
_REPORT_KEYS = {"suites", "success", "failures", "warnings", "statistics"}
# Expectation kwargs that say nothing about what was expected.
_HIDDEN_KWARGS = {"batch_id", "column", "result_format"}


def _esc(value: Any, limit: int = 300) -> str:
    """A value as escaped HTML text, shortened to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def _warnings_html(warnings: list[str]) -> str:
    """The drift warnings section: the batch landed, these shifts are for the retrain to weigh."""
    if not warnings:
        return ""
    items = "".join(f"<li>{_esc(line)}</li>" for line in warnings)
    return ("<h2>Drift warnings</h2><p>distribution shift; the batch is not refused "
            f"(validate.on_drift: warn)</p><ul>{items}</ul>")


def _suite_html(name: str, result: dict, warned: frozenset[str] = frozenset()) -> str:
    """One suite as a table: expectation, column, observed, expected, pass/fail/warn (a failed
    expectation on a statistic in `warned`)."""
    rows = []
    for r in result.get("results", []):
        config = r["expectation_config"]
        kwargs = {k: v for k, v in config["kwargs"].items() if k not in _HIDDEN_KWARGS}
        warn = not r["success"] and config["kwargs"].get("column") in warned
        verdict = "pass" if r["success"] else "warn" if warn else "fail"
        expected = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items())
        error = _exception_message(r["exception_info"])
        observed = f"raised {error}" if error else _observed(r["result"])
        cells = [config["type"], config["kwargs"].get("column", ""), observed, expected]
        tds = "".join(f"<td>{_esc(c)}</td>" for c in cells)
        rows.append(f'<tr>{tds}<td class="{verdict}">{verdict}</td></tr>\n')
    head = "".join(f"<th>{h}</th>" for h in ("expectation", "column", "observed", "expected", ""))
    return f"<h2>Suite {_esc(name)}</h2>\n<table><tr>{head}</tr>\n{''.join(rows)}</table>"


def _observed(result: dict) -> str:
    """What GX observed: the value, the unexpected count with examples, or the missing columns."""
    if "unexpected_count" in result:
        observed = f"{result['unexpected_count']} of {result['element_count']} unexpected"
        examples = list(dict.fromkeys(map(str, result.get("partial_unexpected_list", []))))[:5]
        return observed + (f", e.g. {examples}" if examples else "")
    return json.dumps(result.get("observed_value", result.get("details", "")), default=str)


def _statistics_html(statistics: dict) -> str:
    """The report's statistics as a two-column table."""
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v, 2000)}</td></tr>\n" for k, v in statistics.items())
    return f"<h2>Statistics</h2>\n<table>\n{rows}</table>"


def _extra_html(name: str, value: Any) -> str:
    """A results entry a caller added: a list of records as a table, anything else as JSON."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for record in value for k in record))
        head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_esc(r.get(c, ''))}</td>" for c in columns) + "</tr>\n" for r in value
        )
        return f"<h2>{_esc(name)}</h2>\n<table><tr>{head}</tr>\n{rows}</table>"
    return f"<h2>{_esc(name)}</h2>\n<pre>{_esc(value, 20000)}</pre>"
