"""Validate stage: a Great Expectations suite over the per-sample metadata table.

great_expectations takes seconds to import, so it is imported inside the functions that
run the suites; importing this module stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
# count / max_count is compared with 1 / max_class_imbalance; allow float rounding at equality.
_BALANCE_TOLERANCE = 1e-9


@dataclass
class ValidationReport:
    """Outcome of the validate stage: pass/fail, one line per failure, JSON-ready results."""

    success: bool
    failures: list[str]
    results: dict


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
    failures = _sample_failure_lines(samples_result, samples)
    failures += _class_failure_lines(classes_result, cfg, max(summary["count"], default=0))
    suites = {"samples": samples_result, "classes": classes_result}
    return _report(suites, failures, _statistics(samples, summary))


def write_report(report: ValidationReport, path: Path) -> None:
    """Write `report.results` as indented JSON, atomically; load times are dropped so the
    same data gives the same file (DVC sees no change)."""
    results = json.loads(json.dumps(report.results, default=str))
    for suite in results.get("suites", {}).values():
        suite.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    write_json(Path(path), results)


def _report(suites: dict, failures: list[str], statistics: dict) -> ValidationReport:
    """Bundle suite results into a report; it passes only with suites run and nothing failed."""
    success = bool(suites) and not failures and all(r["success"] for r in suites.values())
    results = {"suites": suites, "success": success, "failures": failures}
    return ValidationReport(success, failures, results | {"statistics": statistics})


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


def _samples_suite(
    samples: pd.DataFrame, cfg: ValidateConfig, classes: list[str]
) -> gx.ExpectationSuite:
    """Expectations per sample: columns, labels, no nulls, one shape, pixel range, unique hash."""
    import great_expectations as gx

    e = gx.expectations
    expectations = [
        e.ExpectTableColumnsToMatchSet(column_set=list(SAMPLE_COLUMNS), exact_match=False),
        e.ExpectColumnValuesToBeOfType(column="label", type_="str"),
        e.ExpectColumnValuesToMatchRegex(column="label", regex=r"\S"),  # non-empty, not blank
        e.ExpectColumnValuesToBeInSet(column="label", value_set=list(classes)),
        e.ExpectColumnUniqueValueCountToBeBetween(column="shape", min_value=1, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=cfg.min_pixel),
        e.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=cfg.max_pixel),
        e.ExpectColumnValuesToBeUnique(column="content_hash"),
    ]
    expectations += [e.ExpectColumnValuesToNotBeNull(column=c) for c in SAMPLE_COLUMNS]
    # A missing column is reported once, by the column-set expectation, not once per check.
    present = [x for x in expectations if getattr(x, "column", None) in (None, *samples.columns)]
    return gx.ExpectationSuite(name="samples", expectations=present)


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


def _sample_failure_lines(result: dict, samples: pd.DataFrame) -> list[str]:
    """One line per failed sample expectation; the shape line lists the shapes seen."""
    notes = {"shape": f"; shapes {samples['shape'].value_counts().to_dict()}"}
    return [_failure_line(r, notes) for r in result["results"] if not r["success"]]


def _failure_line(r: dict, notes: dict[str, str] | None = None) -> str:
    """'expectation(column): observed, expected' for one failed GX result, plus a column note."""
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
    return f"{name}: {observed}{_expected(kwargs)}{(notes or {}).get(column, '')}"


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
