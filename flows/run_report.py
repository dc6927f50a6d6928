"""reports/run.html: the run's verdict, gates, metrics and plots in one self-contained page."""

from __future__ import annotations

from pathlib import Path

from evergreen.workspace import Workspace, atomic_write_bytes, read_json


def report_links(ws: Workspace) -> dict[str, str]:
    """The other reports, relative to reports/: data validation, recent ingest checks, JSON."""
    links = {}
    for name, label in (("validation.html", "dataset validation (Great Expectations)"),
                        ("metrics.json", "metrics (JSON, DVC metrics)"),
                        ("compression.json", "compression variants (JSON)")):
        if (ws.reports / name).exists():
            links[label] = name
    recent = sorted((ws.reports / "ingest").glob("*.html"), key=lambda p: p.stat().st_mtime)[-5:]
    for path in reversed(recent):
        links[f"ingest check of batch {path.stem}"] = f"ingest/{path.name}"
    return links


def write_run_report(ws: Workspace, outcome: dict, stages: dict | None = None) -> Path:
    """reports/run.html: the run's verdict, gates, metrics and plots in one self-contained page."""
    from tasks.run_page import read_figures, render_run_report

    compression = ws.reports / "compression.json"
    page = render_run_report(outcome, read_json(ws.reports / "metrics.json"),
                             read_json(compression) if compression.exists() else None,
                             read_figures(ws.reports / "figures"), report_links(ws), stages)
    path = ws.reports / "run.html"
    atomic_write_bytes(path, page.encode())
    return path
