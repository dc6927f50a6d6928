"""validate's main: the Great Expectations suite over the dataset's metadata table."""

from __future__ import annotations

from evergreen.config import ValidateConfig
from evergreen.errors import DataValidationError
from evergreen.workspace import Workspace, atomic_write_bytes


def run_validate(ws: Workspace, section: ValidateConfig) -> dict:
    """reports/validation.json and .html; a failed expectation stops the run (exit 2)."""
    from tasks.ingest import read_metadata
    from tasks.validate import render_html, validate_metadata, write_report

    report = validate_metadata(read_metadata(ws.batches), section)
    write_report(report, ws.reports / "validation.json")
    atomic_write_bytes(ws.reports / "validation.html",
                       render_html(report, f"dataset validation: {ws.batches}").encode())
    if not report.success:
        failed = "\n  ".join(report.failures)
        raise DataValidationError(
            f"{ws.batches}: data validation failed ({len(report.failures)} expectations):\n  "
            f"{failed}\nfull result: {ws.reports / 'validation.json'}")
    return {"success": True, "samples": report.results.get("statistics", {})}
