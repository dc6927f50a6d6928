"""Prefect artifacts of a run: summary with the gate table, metrics table, compression table."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evergreen.workspace import Workspace, read_json

METRIC_KEYS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc_ovr",
               "latency_ms_p50", "latency_ms_p95", "throughput", "size_bytes", "params")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def summary_markdown(outcome: dict, stages: dict) -> str:
    """Verdict, gate table and key metrics, as the UI's run summary."""
    m = outcome["metrics"]
    lines = [f"# Run summary: {outcome['verdict']} ({outcome['version']})", "",
             f"- candidate: **{outcome['role']}** ({outcome['arch']}, compression "
             f"{outcome.get('compression', 'none')})",
             f"- champion before: {outcome['champion_before'] or 'none'}",
             f"- accuracy {_fmt(m['accuracy'])}, macro-F1 {_fmt(m['f1_macro'])}, "
             f"null model accuracy {_fmt(m['null_accuracy'])}, teacher {_fmt(m['teacher_accuracy'])}",
             f"- latency p50/p95 {_fmt(m['latency_ms_p50'])}/{_fmt(m['latency_ms_p95'])} ms, "
             f"size {m['size_bytes'] / 1024:.1f} KB",
             f"- stages run: {', '.join(n for n, s in stages.items() if s['ran']) or 'none'}",
             f"- data version: {outcome['data_version']}", ""]
    if outcome["gates"]:
        lines += ["| gate | value | threshold | passed |", "|---|---|---|---|"]
        lines += [f"| {g['name']} | {_fmt(g['value'])} | {g['op']} {_fmt(g['threshold'])} | "
                  f"{'yes' if g['passed'] else '**no**'} |" for g in outcome["gates"]]
    lines += [""] + [f"- {r}" for r in outcome["reasons"]]
    return "\n".join(lines)


def publish_run_artifacts(ws: Workspace, outcome: dict, stages: dict) -> None:
    """Stable keys, so the Artifacts page shows each one's history across runs."""
    create_markdown_artifact(summary_markdown(outcome, stages), key="training-run-summary",
                             description="verdict, gates and key metrics of the run")
    metrics = read_json(ws.reports / "metrics.json")
    rows = [{"model": role, **{k: _fmt(metrics[role].get(k)) for k in METRIC_KEYS}}
            for role in ("teacher", "student", "selected", "null_model") if role in metrics]
    create_table_artifact(rows, key="training-metrics", description="test-split metrics per model")
    compression = ws.reports / "compression.json"
    if compression.exists():
        from tasks.pareto import pareto_markdown

        create_markdown_artifact(pareto_markdown(read_json(compression)), key="compression-pareto",
                                 description="compression variants: accuracy, latency, size, selection")
