"""The validate stage's two checks: the whole dataset (validate_metadata) and an incoming batch
against it (validate_batch)."""

from __future__ import annotations

import pandas as pd

from evergreen.config import ValidateConfig
from tasks.validate.drift import (
    _DRIFT_THRESHOLDS,
    SHIFT_STATISTICS,
    _batch_statistics,
    _drift_failure_lines,
    _drift_suite,
    _shift_checks,
)
from tasks.validate.failures import _class_failure_lines, _sample_failure_lines
from tasks.validate.report import ValidationReport, _report
from tasks.validate.suites import (
    _CLASSES_FORMAT,
    _DRIFT_FORMAT,
    _SAMPLES_FORMAT,
    _SHAPE_COUNT,
    _batch_notes,
    _batch_samples_suite,
    _class_summary,
    _classes_suite,
    _dims,
    _gx_context,
    _run_suite,
    _samples_frame,
    _samples_suite,
    _sorted_labels,
    _statistics,
)


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
