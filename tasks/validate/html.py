"""reports/validation.html: the suites, their failures and warnings, and the statistics."""

from __future__ import annotations

import html
import json
from typing import Any

from tasks.validate.failures import _exception_message
from tasks.validate.report import ValidationReport


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
