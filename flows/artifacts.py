"""Prefect artifacts of a run: summary with the gate table, metrics and compression tables,
data validation, training progress, and links to the HTML reports."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from evergreen.workspace import Workspace, read_json

log = logging.getLogger("evergreen.flow")

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
    publish_reports(ws, outcome, stages)
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


def validation_markdown(results: dict, html_path: Path | None = None) -> str:
    """The dataset's Great Expectations verdict: suites, failures, class counts, shapes."""
    stats = results.get("statistics", {})
    verdict = "passed" if results.get("success") else "**FAILED**"
    lines = [f"# Data validation: {verdict}", "",
             f"- samples: {stats.get('rows', '—')}, classes: {len(stats.get('classes', {}))}, "
             f"imbalance (largest / smallest class): {_fmt(stats.get('imbalance'))}",
             f"- pixel range: {stats.get('pixel_min', '—')}..{stats.get('pixel_max', '—')}, "
             f"shapes: {', '.join(f'{k} ({v})' for k, v in stats.get('shapes', {}).items()) or '—'}",
             "", "| suite | expectations | passed | success |", "|---|---|---|---|"]
    for name, suite in results.get("suites", {}).items():
        st = suite.get("statistics", {})
        lines.append(f"| {name} | {st.get('evaluated_expectations', '—')} | "
                     f"{st.get('successful_expectations', '—')} | "
                     f"{'yes' if suite.get('success') else '**no**'} |")
    lines += [""] + [f"- {f}" for f in results.get("failures", [])]
    if stats.get("classes"):
        counts = ", ".join(f"{c}: {n}" for c, n in stats["classes"].items())
        lines += ["", f"Samples per class: {counts}"]
    if html_path is not None:
        lines += ["", f"Full report: {html_path.as_uri()}"]
    return "\n".join(lines)


def publish_reports(ws: Workspace, outcome: dict, stages: dict) -> None:
    """Write reports/run.html and publish a link to it (key `run-report`)."""
    from flows.run_report import write_run_report

    run_html = write_run_report(ws, outcome, stages)
    create_link_artifact(run_html.as_uri(), link_text=f"run report ({outcome['verdict']}, "
                         f"{outcome['version']})", key="run-report",
                         description="metrics, gates and plots of the run (self-contained HTML)")


def publish_validation(ws: Workspace) -> None:
    """The dataset validation summary (markdown) and a link to its HTML report."""
    validation, page = ws.reports / "validation.json", ws.reports / "validation.html"
    if not validation.exists():
        return
    create_markdown_artifact(validation_markdown(read_json(validation), page if page.exists() else None),
                             key="data-validation", description="Great Expectations suites over the dataset")
    if page.exists():
        create_link_artifact(page.as_uri(), link_text="data validation report", key="data-validation-report",
                             description="Great Expectations results of the dataset (HTML)")


def publish_batch_drift(ws: Workspace, landed: dict) -> None:
    """A batch that landed with drift warnings (key `batch-drift`): its figures and report."""
    page = ws.reports / "ingest" / f"{landed['batch_id']}.html"
    lines = [f"# Batch {landed['batch_id']} landed with drift warnings", "",
             f"- source: {landed['source']}, {landed['added']} new samples",
             "- validate.on_drift is warn: the batch is trained on; the label-noise screen of "
             "a retrain and the gates decide what is promoted", ""]
    lines += [f"- {line}" for line in landed["drift"]]
    if page.exists():
        lines += ["", f"Full report: {page.as_uri()}"]
    create_markdown_artifact("\n".join(lines), key="batch-drift",
                             description="distribution shift of a landed batch")


class TrainingProgress:
    """A progress artifact that follows the training epochs (key `training-progress`).

    The UI is for watching: a failed update is logged, never fatal to the training.
    """

    def __init__(self, epochs: int, what: str = "teacher training"):
        self.epochs, self.what, self.id = epochs, what, None
        try:
            self.id = create_progress_artifact(0.0, key="training-progress",
                                               description=f"{what}: starting, {epochs} epochs")
        except Exception as exc:  # the API is down or slow: training goes on
            log.warning("progress artifact not created: %s", exc)

    def update(self, row: dict, epochs: int) -> None:
        """Per epoch: percent done, and the epoch's losses and accuracy as the description."""
        self._set(100.0 * row["epoch"] / max(epochs, 1),
                  f"{self.what}: epoch {row['epoch']}/{epochs}, train_loss {row['train_loss']:.4f}, "
                  f"val_loss {row['val_loss']:.4f}, val_acc {row['val_acc']:.4f}")

    def finish(self, summary: dict) -> None:
        if not summary.get("ran"):
            self._set(100.0, f"{self.what}: unchanged since the last run, skipped")
        else:
            self._set(100.0, f"{self.what}: done, {summary.get('epochs_run')} epochs, "
                      f"val_acc {_fmt(summary.get('val_acc'))}")

    def _set(self, percent: float, description: str) -> None:
        if self.id is None:
            return
        try:
            update_progress_artifact(self.id, percent, description=description)
        except Exception as exc:
            log.warning("progress artifact not updated: %s", exc)


def retraining_markdown(result: dict) -> str:
    """A retrain: the new batches and their screening, warm or full training, the
    champion/challenger comparison and every failed gate with value and threshold."""
    lines = [f"# Continual retraining: {result['status']}", "",
             f"- champion before: {result['champion']}", f"- {result['message']}"]
    screened = result["batches"].get("screened", [])
    if screened:
        lines += ["", "| batch | drift | champion accuracy on it | scored | verdict |",
                  "|---|---|---|---|---|"]
        for r in screened:
            noise = r["noise"] or {}
            lines.append(f"| {r['batch_id']} | {'; '.join(r.get('drift') or []) or 'none'} | "
                         f"{_fmt(noise.get('accuracy'))} | {noise.get('scored', '—')} | "
                         f"{'**quarantined**: ' + '; '.join(r['reasons']) if r['reasons'] else 'used'} |")
    if result.get("training"):
        lines += ["", f"- training: **{result['training']['mode']}** ({result['training']['why']})"]
    outcome = result.get("promote")
    if outcome:
        lines += comparison_lines(outcome.get("comparison"))
        failed = [g for g in outcome["gates"] if not g["passed"]]
        lines += ["", f"## Verdict: {outcome['verdict']} ({outcome['version']})", ""]
        lines += [f"- failed gate {g['name']}: {_fmt(g['value'])}, threshold {g['op']} "
                  f"{_fmt(g['threshold'])}" for g in failed] or ["- every gate passed"]
    return "\n".join(lines)


def comparison_lines(comparison: dict | None) -> list[str]:
    from tasks.retrain import SPLIT_COMPARISONS

    if not comparison:
        return []
    lines = ["", "| split | samples | champion | challenger | only champion right | "
             "only challenger right | McNemar p | improvement |", "|---|---|---|---|---|---|---|---|"]
    for name in SPLIT_COMPARISONS:
        if c := comparison.get(name):
            m = c["mcnemar"]
            lines.append(f"| {name} | {c['samples']} | {_fmt(c['champion_accuracy'])} | "
                         f"{_fmt(c['challenger_accuracy'])} | {m['champion_only']} | "
                         f"{m['challenger_only']} | {_fmt(m['pvalue'])} | "
                         f"{'yes' if c['improvement'] else 'no'} |")
    return lines


def publish_retraining(result: dict) -> None:
    """The retrain summary (key `retraining-summary`)."""
    create_markdown_artifact(retraining_markdown(result), key="retraining-summary",
                             description="new batches, screening, training mode, "
                                         "champion vs challenger, failed gates")
