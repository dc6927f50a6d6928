"""Validate stage: Great Expectations suites over the per-sample metadata table, for the
whole dataset (validate_metadata) and for an incoming batch against it (validate_batch).

checks.py runs them; suites.py holds the GX suites, drift.py the batch's shift statistics,
failures.py the failure lines, report.py the outcome and html.py its page.

great_expectations and scipy take seconds to import, so they are imported inside the
functions that use them; importing this package stays fast.
"""

from tasks.validate.checks import validate_batch, validate_metadata
from tasks.validate.drift import _psi, label_shift, pixel_shift
from tasks.validate.html import render_html
from tasks.validate.report import ValidationReport, write_report

__all__ = ["ValidationReport", "label_shift", "pixel_shift", "_psi", "render_html",
           "validate_batch", "validate_metadata", "write_report"]
