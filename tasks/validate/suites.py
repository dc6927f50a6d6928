"""Great Expectations suites over the per-sample metadata table (samples, classes), the GX
context they run in, and the dataset's summary statistics."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from evergreen.config import ValidateConfig
from tasks.ingest.batches import META_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx


# the metadata columns the sample suite requires filled: all of ingest's but decoded_as
SAMPLE_COLUMNS = tuple(c for c in META_COLUMNS if c != "decoded_as")


# Sample results name the offending rows by hash; GX keeps the first 20 per expectation.
_SAMPLES_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["content_hash"]}


# Class results list every failing class with its count (one row per class, so small).
_CLASSES_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["label", "count"]}


# Batch statistics are one summary row; each expectation's observed value is the statistic.
_DRIFT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": []}


# count / max_count is compared with 1 / max_class_imbalance; allow float rounding at equality.
_BALANCE_TOLERANCE = 1e-9


_MAX_LISTED = 20  # unknown labels named in one failure line


# The one-shape check of a table without a reference, as failure lines name it.
_SHAPE_COUNT = "expect_column_unique_value_count_to_be_between(shape)"


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
