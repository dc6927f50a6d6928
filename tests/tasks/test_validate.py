"""Validate stage: each expectation fails on its own broken table or batch and names the problem."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ValidateConfig
from tasks.validate import (
    ValidationReport,
    _label_shift,
    _pixel_shift,
    _psi,
    render_html,
    validate_batch,
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


# validate_batch: an incoming batch, sample by sample and against the reference dataset.


def make_samples(labels: list[str], rng: np.random.Generator, mean: float = 100.0) -> pd.DataFrame:
    """1x28x28 samples with the given labels and pixel_mean ~ N(mean, 10); unique hashes."""
    n = len(labels)
    return pd.DataFrame(
        {
            "content_hash": [f"{h:064x}" for h in rng.choice(2**62, size=n, replace=False)],
            "label": list(labels),
            "height": [28] * n,
            "width": [28] * n,
            "channels": [1] * n,
            "pixel_min": [0] * n,
            "pixel_max": [255] * n,
            "pixel_mean": rng.normal(mean, 10.0, n),
            "source": ["synthetic"] * n,
            "batch_id": ["b1"] * n,
        }
    )


@pytest.fixture
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(batch, reference): a random 100 / 1,000 split of 1,100 samples of 10 balanced classes."""
    rng = np.random.default_rng(0)
    rows = make_samples([str(c) for c in range(10) for _ in range(110)], rng)
    rows = rows.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return rows.iloc[:100].reset_index(drop=True), rows.iloc[100:].reset_index(drop=True)


def batch_failures(batch, reference, cfg=None, duplicates=0) -> list[str]:
    """Validate a batch and return its failure lines, checking the report is a failure."""
    report = validate_batch(batch, reference, cfg or ValidateConfig(), duplicates)
    assert not report.success and not report.results["success"]
    assert report.failures and report.failures == report.results["failures"]
    return report.failures


def test_batch_from_the_same_distribution_passes(split):
    batch, reference = split
    cfg = ValidateConfig()
    report = validate_batch(batch, reference, cfg, duplicates=100)  # rate 0.5: at the limit
    assert report.success and report.failures == []
    assert set(report.results["suites"]) == {"batch_samples", "batch_drift"}
    stats = report.results["statistics"]
    assert stats["batch_size"] == 100 and stats["reference_size"] == 1000
    assert sum(stats["label_counts"].values()) == 100 and stats["duplicate_rate"] == 0.5
    assert stats["label_pvalue"] >= cfg.min_label_shift_pvalue
    assert 0.0 <= stats["pixel_psi"] <= cfg.max_pixel_psi
    assert 0.0 <= stats["ks_statistic"] <= 1.0 and 0.0 <= stats["ks_pvalue"] <= 1.0


REFUSE = ValidateConfig(on_drift="refuse")


def test_one_class_batch_fails_label_shift(split):
    batch, reference = split
    batch["label"] = "3"
    line = only_line(batch_failures(batch, reference, REFUSE), "label shift")
    assert "< validate.min_label_shift_pvalue 0.001" in line
    assert "{'3': 100}" in line and "1000 reference samples" in line


def test_shifted_pixel_means_fail_psi(split):
    batch, reference = split
    batch["pixel_mean"] += 30.0  # three standard deviations
    failures = batch_failures(batch, reference, REFUSE)
    line = only_line(failures, "pixel shift")
    assert "PSI" in line and "> validate.max_pixel_psi 0.25" in line and "KS statistic" in line
    assert len(failures) == 1


def test_shift_warns_by_default_with_its_figures(split):
    """validate.on_drift: warn: a shifted batch passes, each shift a warning line and a figure."""
    batch, reference = split
    batch["pixel_mean"] += 30.0
    batch["label"] = "3"
    report = validate_batch(batch, reference, ValidateConfig())
    assert report.success and report.results["success"] and report.failures == []
    assert report.warnings == report.results["warnings"] and len(report.warnings) == 2
    only_line(report.warnings, "label shift", "< validate.min_label_shift_pvalue 0.001")
    only_line(report.warnings, "pixel shift", "> validate.max_pixel_psi 0.25")
    figures = {r["statistic"]: r for r in report.results["drift"]}
    assert figures["pixel_psi"]["result"] == "warn" and figures["label_pvalue"]["result"] == "warn"
    assert figures["pixel_psi"]["value"] == report.results["statistics"]["pixel_psi"] > 0.25
    assert figures["ks_statistic"]["result"] == "info"
    refused = validate_batch(batch, reference, REFUSE)
    assert not refused.success and refused.warnings == [] and len(refused.failures) == 2
    assert {r["result"] for r in refused.results["drift"] if r["statistic"] != "ks_statistic"} \
        == {"fail"}


def test_shift_does_not_excuse_integrity_failures(split):
    batch, reference = split
    batch["pixel_mean"] += 30.0
    batch.loc[:1, "label"] = "10"  # unknown class: refused whatever validate.on_drift says
    failures = batch_failures(batch, reference, duplicates=101)
    only_line(failures, "expect_column_values_to_be_in_set(label)")
    only_line(failures, "duplicate rate")
    assert not any("pixel shift" in line for line in failures)
    report = validate_batch(batch, reference, ValidateConfig(), 101)
    only_line(report.warnings, "pixel shift")


def test_warned_shift_is_marked_in_the_html_report(split, tmp_path):
    batch, reference = split
    batch["pixel_mean"] += 30.0
    report = validate_batch(batch, reference, ValidateConfig())
    page = render_html(report, "batch b1")
    assert "PASS: 0 failure(s), 1 drift warning(s)" in page and 'class="verdict warn"' in page
    assert "Drift warnings" in page and "pixel shift: PSI" in page
    assert '<td class="warn">warn</td>' in page and '<td class="fail">' not in page
    write_report(report, tmp_path / "b1.json")
    saved = json.loads((tmp_path / "b1.json").read_text())
    assert saved["success"] and saved["warnings"] == report.warnings
    assert [r["statistic"] for r in saved["drift"]] == ["label_pvalue", "pixel_psi", "ks_statistic"]


@pytest.mark.parametrize("policy", ["reject", "allow"])
def test_unknown_label_follows_new_class_policy(split, policy):
    batch, reference = split
    batch.loc[:1, "label"] = "10"
    report = validate_batch(batch, reference, ValidateConfig(new_classes=policy))
    if policy == "allow":
        assert report.success, report.failures
    else:
        line = only_line(report.failures, "expect_column_values_to_be_in_set(label)")
        assert "2 unexpected" in line and "unknown labels ['10']" in line


def test_batch_shape_must_match_the_dataset(split):
    batch, reference = split
    batch["height"] = 16
    line = only_line(batch_failures(batch, reference), "(shape)")
    assert "1x16x28" in line and "1x28x28" in line


def test_batch_pixel_mean_must_be_finite(split, tmp_path):
    batch, reference = split
    batch.loc[0, "pixel_mean"] = float("inf")
    report = validate_batch(batch, reference, ValidateConfig())
    line = only_line(report.failures, "expect_column_values_to_be_between(pixel_mean)")
    assert "1 unexpected" in line and "inf" in line and "<= 255" in line
    write_report(report, tmp_path / "validation.json")
    text = (tmp_path / "validation.json").read_text()
    assert '"Infinity"' in text  # quoted: the file is strict JSON
    json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in the report"))


def test_duplicate_rate_above_the_limit_fails(split):
    batch, reference = split
    line = only_line(batch_failures(batch, reference, duplicates=101), "duplicate rate")
    assert "> validate.max_duplicate_rate 0.5" in line and "101 of 201" in line


def test_batch_smaller_than_minimum_fails(split):
    batch, reference = split
    failures = batch_failures(batch, reference, ValidateConfig(min_batch_size=101))
    assert failures == ["batch size: 100 new samples < validate.min_batch_size 101"]


def test_empty_batch_fails_on_size_alone(split):
    batch, reference = split
    assert batch_failures(batch.head(0), reference) == [
        "batch size: 0 new samples < validate.min_batch_size 1"
    ]


def test_first_batch_gets_only_sample_checks_and_size(split):
    batch, _ = split
    batch["label"], batch["pixel_mean"] = "3", batch["pixel_mean"] + 100
    report = validate_batch(batch, batch.head(0), ValidateConfig(), duplicates=1000)
    assert report.success, report.failures
    drift = report.results["suites"]["batch_drift"]["results"]
    assert [r["expectation_config"]["kwargs"]["column"] for r in drift] == ["batch_size"]
    stats = report.results["statistics"]
    assert stats["reference_size"] == 0 and stats["label_pvalue"] is None and stats["pixel_psi"] is None
    batch.loc[0, "width"] = 8
    line = only_line(batch_failures(batch, batch.head(0)), "(shape)")
    assert "1x28x8" in line and "1x28x28" in line


def test_label_shift_is_defined_for_small_batches_and_one_class():
    reference = pd.Series([str(c) for c in range(10) for _ in range(100)])
    assert _label_shift(pd.Series(["3"] * 9), reference) == (0.0, 1.0, 1)  # 0.9 expected per class
    assert _label_shift(pd.Series(["a"] * 50), pd.Series(["a"] * 10)) == (0.0, 1.0, 1)
    assert _label_shift(pd.Series(["new"] * 50), reference) == (0.0, 1.0, 0)  # unknown: not tested
    chi2, pvalue, cells = _label_shift(pd.Series(["3"] * 40), reference)  # 4 expected: pairs pooled
    assert cells == 5 and pvalue < 1e-6


def test_psi_is_small_for_the_same_sample_and_finite_on_ties():
    values = np.random.default_rng(0).normal(100.0, 10.0, 1000)
    assert _psi(values, values) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < _psi(np.full(10, 4.5), np.full(100, 5.0), bins=2) < np.inf


@pytest.mark.parametrize(("size", "bins"), [(39, 1), (40, 2), (200, 10), (5000, 10)])
def test_small_batches_get_fewer_psi_bins(size, bins):
    rng = np.random.default_rng(0)
    reference, same = rng.normal(100.0, 10.0, 5000), rng.normal(100.0, 10.0, size)
    shift = _pixel_shift(same, reference)
    assert shift["pixel_bins"] == bins and shift["pixel_psi"] < 0.25
    shifted = _pixel_shift(same + 30.0, reference)["pixel_psi"]
    assert shifted == 0.0 if bins < 2 else shifted > 1.0


def test_render_html_escapes_and_lists_every_expectation(split):
    batch, reference = split
    batch.loc[0, "label"] = "<script>"
    report = validate_batch(batch, reference, ValidateConfig())
    page = render_html(report, "batch <b1>")
    assert "FAIL" in page and "PASS" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "batch &lt;b1&gt;" in page
    for suite in report.results["suites"].values():
        for r in suite["results"]:
            assert r["expectation_config"]["type"] in page
    assert "label_pvalue" in page and "pixel_psi" in page  # the statistics
    report.results["dropped"] = [{"source": "<x>.png", "reason": "corrupt"}]  # added by ingest
    assert "&lt;x&gt;.png</td><td>corrupt" in render_html(report, "batch")
    passed = ValidationReport(True, [], {"suites": {}, "statistics": {"rows": 3}})
    assert "PASS" in render_html(passed, "ok")


def test_batch_report_file_is_deterministic(split, tmp_path):
    batch, reference = split
    batch.loc[0, "label"] = "10"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_report(validate_batch(batch, reference, ValidateConfig(), 7), first)
    write_report(validate_batch(batch, reference, ValidateConfig(), 7), second)
    assert first.read_text() == second.read_text()
    assert "ge_load_time" not in first.read_text()
