"""validate_batch: an incoming batch, sample by sample and against the reference dataset (drift)."""

import json

import numpy as np
import pandas as pd
import pytest

from evergreen.config import ValidateConfig
from tasks.validate import (
    ValidationReport,
    _psi,
    label_shift,
    pixel_shift,
    render_html,
    validate_batch,
    write_report,
)
from tests.tasks.validate.test_suites import only_line

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
    assert label_shift(pd.Series(["3"] * 9), reference) == (0.0, 1.0, 1)  # 0.9 expected per class
    assert label_shift(pd.Series(["a"] * 50), pd.Series(["a"] * 10)) == (0.0, 1.0, 1)
    assert label_shift(pd.Series(["new"] * 50), reference) == (0.0, 1.0, 0)  # unknown: not tested
    chi2, pvalue, cells = label_shift(pd.Series(["3"] * 40), reference)  # 4 expected: pairs pooled
    assert cells == 5 and pvalue < 1e-6


def test_psi_is_small_for_the_same_sample_and_finite_on_ties():
    values = np.random.default_rng(0).normal(100.0, 10.0, 1000)
    assert _psi(values, values) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < _psi(np.full(10, 4.5), np.full(100, 5.0), bins=2) < np.inf


@pytest.mark.parametrize(("size", "bins"), [(39, 1), (40, 2), (200, 10), (5000, 10)])
def test_small_batches_get_fewer_psi_bins(size, bins):
    rng = np.random.default_rng(0)
    reference, same = rng.normal(100.0, 10.0, 5000), rng.normal(100.0, 10.0, size)
    shift = pixel_shift(same, reference)
    assert shift["pixel_bins"] == bins and shift["pixel_psi"] < 0.25
    shifted = pixel_shift(same + 30.0, reference)["pixel_psi"]
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
