"""validate_metadata: each dataset expectation fails on its own broken table and names the problem."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from evergreen.config import ValidateConfig
from tasks.validate import (
    ValidationReport,
    validate_metadata,
    write_report,
)

CLASSES = ["0", "1", "2"]
PER_CLASS = 4


@pytest.fixture
def cfg() -> ValidateConfig:
    return ValidateConfig(min_samples_per_class=3, max_class_imbalance=2.0)


def make_meta(counts: dict[str, int]) -> pd.DataFrame:
    """A clean metadata table of 1x8x8 samples with `counts[label]` samples per label."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    n = len(labels)
    return pd.DataFrame(
        {
            "content_hash": [f"{i:064x}" for i in range(n)],
            "label": labels,
            "height": [8] * n,
            "width": [8] * n,
            "channels": [1] * n,
            "pixel_min": [0] * n,
            "pixel_max": [16 + i for i in range(n)],
            "pixel_mean": [4.5] * n,
            "source": ["digits"] * n,
            "batch_id": ["b0"] * n,
        }
    )


@pytest.fixture
def meta() -> pd.DataFrame:
    """Twelve clean samples, four per class."""
    return make_meta(dict.fromkeys(CLASSES, PER_CLASS))


def failures_of(meta: pd.DataFrame, cfg: ValidateConfig, classes=CLASSES) -> list[str]:
    """Validate and return the failure lines, checking the report is a failure."""
    report = validate_metadata(meta, cfg, classes)
    assert not report.success and not report.results["success"]
    assert report.failures and report.failures == report.results["failures"]
    return report.failures


def only_line(failures: list[str], *words: str) -> str:
    """The one failure line that contains every word."""
    lines = [line for line in failures if all(w in line for w in words)]
    assert len(lines) == 1, failures
    return lines[0]


def test_import_does_not_load_great_expectations():
    code = "import sys, tasks.validate; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_clean_table_passes(meta, cfg):
    report = validate_metadata(meta, cfg, CLASSES)
    assert report.success and report.failures == []
    assert set(report.results["suites"]) == {"samples", "classes"}
    assert all(s["success"] for s in report.results["suites"].values())
    stats = report.results["statistics"]
    assert stats["rows"] == len(meta) and stats["shapes"] == {"1x8x8": len(meta)}
    assert stats["classes"] == {c: PER_CLASS for c in CLASSES} and stats["imbalance"] == 1.0


def test_classes_default_to_sorted_labels(meta, cfg):
    report = validate_metadata(meta, cfg)
    assert report.success
    assert list(report.results["statistics"]["classes"]) == CLASSES


def test_label_outside_classes_fails(meta, cfg):
    meta.loc[0, "label"] = "7"
    line = only_line(failures_of(meta, cfg), "expect_column_values_to_be_in_set(label)")
    assert "'7'" in line


@pytest.mark.parametrize("label", ["", "  "])
def test_blank_label_fails_without_class_list(meta, cfg, label):
    meta.loc[0, "label"] = label
    line = only_line(failures_of(meta, cfg, None), "expect_column_values_to_match_regex(label)")
    assert "1 unexpected" in line


def test_non_string_label_fails(meta, cfg):
    meta["label"] = meta["label"].astype(object)
    meta.loc[0, "label"] = 0
    only_line(failures_of(meta, cfg, None), "expect_column_values_to_be_of_type(label)")


@pytest.mark.parametrize("column", ["label", "pixel_mean", "source"])
def test_null_fails(meta, cfg, column):
    meta.loc[0, column] = None
    line = only_line(failures_of(meta, cfg), f"expect_column_values_to_not_be_null({column})")
    assert "1 null" in line


def test_two_shapes_fail(meta, cfg):
    meta.loc[0, "height"] = 16
    line = only_line(failures_of(meta, cfg), "(shape)")
    assert "observed 2" in line and "1x16x8" in line and "1x8x8" in line


@pytest.mark.parametrize(("column", "value"), [("pixel_min", -1), ("pixel_max", 256)])
def test_pixel_out_of_range_fails(meta, cfg, column, value):
    meta.loc[0, column] = value
    line = only_line(failures_of(meta, cfg), f"expect_column_values_to_be_between({column})")
    assert str(value) in line


def test_pixel_range_follows_config(meta, cfg):
    cfg.max_pixel = 20
    line = only_line(failures_of(meta, cfg), "(pixel_max)")
    assert "7 unexpected" in line and "<= 20" in line


def test_duplicate_hash_fails(meta, cfg):
    meta.loc[1, "content_hash"] = meta.loc[0, "content_hash"]
    line = only_line(failures_of(meta, cfg), "expect_column_values_to_be_unique(content_hash)")
    assert meta.loc[0, "content_hash"] in line


def test_too_few_per_class_fails(meta, cfg):
    cfg.min_samples_per_class = 5
    lines = [x for x in failures_of(meta, cfg) if x.startswith("min samples per class")]
    expected = "min samples per class: class '{}' has 4 samples, expected >= 5"
    assert lines == [expected.format(c) for c in CLASSES]


def test_missing_class_fails(meta, cfg):
    line = only_line(failures_of(meta, cfg, [*CLASSES, "3"]), "min samples per class")
    assert "class '3' has 0 samples" in line


def test_imbalance_fails():
    cfg = ValidateConfig(min_samples_per_class=1, max_class_imbalance=3.0)
    failures = failures_of(make_meta({"0": 4, "1": 4, "2": 1}), cfg)
    line = only_line(failures, "max class imbalance")
    assert "class '2' has 1 samples vs 4" in line and "<= 3.0" in line


@pytest.mark.parametrize(("largest", "rarest"), [(4, 2), (4, 3), (11, 3)])
def test_imbalance_at_the_limit_passes(largest, rarest):
    # 3 / 11 < 1 / (11 / 3) in floats: the limit must hold despite rounding
    cfg = ValidateConfig(min_samples_per_class=1, max_class_imbalance=largest / rarest)
    meta = make_meta({"0": largest, "1": largest, "2": rarest})
    assert validate_metadata(meta, cfg, CLASSES).success


def test_missing_column_is_reported_once(meta, cfg):
    failures = failures_of(meta.drop(columns=["source"]), cfg)
    assert failures == ["expect_table_columns_to_match_set: missing columns ['source']"]


@pytest.mark.parametrize("empty", [pd.DataFrame(), "no rows"])
def test_empty_table_fails_cleanly(meta, cfg, empty):
    table = meta.head(0) if isinstance(empty, str) else empty
    report = validate_metadata(table, cfg, CLASSES)
    assert not report.success and len(report.failures) == 1
    assert "no samples" in report.failures[0]
    assert report.results["statistics"]["rows"] == 0


def test_write_report_writes_valid_json(meta, cfg, tmp_path):
    meta.loc[0, "label"] = "7"
    report = validate_metadata(meta, cfg, CLASSES)
    path = tmp_path / "reports" / "validation.json"
    write_report(report, path)
    loaded = json.loads(path.read_text())
    assert loaded["success"] is False and loaded["failures"] == report.failures
    assert set(loaded["suites"]) == {"samples", "classes"}
    assert [p.name for p in path.parent.iterdir()] == ["validation.json"]  # no temp file left


def test_write_report_replaces_existing(tmp_path):
    path = tmp_path / "validation.json"
    path.write_text("old")
    write_report(ValidationReport(True, [], {"success": True}), path)
    assert json.loads(path.read_text()) == {"success": True}
