"""The validate stage's outcome: ValidationReport (pass/fail, failure lines, JSON-ready results)
and its JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from evergreen.workspace import write_json


@dataclass
class ValidationReport:
    """Outcome of the validate stage: pass/fail, one line per failure, JSON-ready results, and
    one line per distribution shift that did not fail the batch (validate.on_drift: warn)."""

    success: bool
    failures: list[str]
    results: dict
    warnings: list[str] = field(default_factory=list)


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
