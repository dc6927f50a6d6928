"""The HTML run report: one self-contained page (PNGs embedded) with metrics, gates and plots."""

from __future__ import annotations

import base64
import html
from pathlib import Path

# (file under reports/figures, caption), in the order the page shows them
FIGURES = [
    ("train_curves.png", "Teacher training: loss and validation accuracy per epoch"),
    ("compress_curves.png", "Student (distillation) training curves"),
    ("confusion_matrix.png", "Candidate confusion matrix on the test split"),
    ("roc.png", "Candidate ROC curves, one class against the rest (test split)"),
    ("pareto.png", "Compression variants: accuracy against latency, the Pareto front dashed"),
    ("predictions.png", "Sample test predictions, misclassified ones first (red)"),
]
MODEL_COLUMNS = [("accuracy", "accuracy", "{:.4f}"), ("f1_macro", "macro F1", "{:.4f}"),
                 ("precision_macro", "precision", "{:.4f}"), ("recall_macro", "recall", "{:.4f}"),
                 ("roc_auc_ovr", "ROC-AUC", "{:.4f}"), ("latency_ms_p50", "p50 ms", "{:.3f}"),
                 ("latency_ms_p95", "p95 ms", "{:.3f}"), ("size_bytes", "KB", "kb"),
                 ("params", "params", "{:,}")]
STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:4px;color:#fff;font-weight:bold}
.promoted{background:#2e7d32}.rejected{background:#c62828}.unchanged{background:#616161}
.fail{color:#c62828;font-weight:bold}figure{margin:1rem 0 2rem}img{max-width:100%;
border:1px solid #eee}figcaption{color:#555;font-size:.9rem}"""


def _esc(value) -> str:
    return html.escape(str(value))


def _cell(value, fmt: str) -> str:
    if value is None:
        return "—"
    if fmt == "kb":
        return f"{value / 1024:.1f}"
    return fmt.format(value) if isinstance(value, (int, float)) else _esc(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already escaped."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def models_table(metrics: dict) -> str:
    roles = [r for r in ("teacher", "student", "selected", "null_model") if r in metrics]
    rows = [[_esc(r + (" (candidate)" if r == metrics.get("candidate") else ""))]
            + [_cell(metrics[r].get(k), fmt) for k, _, fmt in MODEL_COLUMNS] for r in roles]
    return table(["model"] + [label for _, label, _ in MODEL_COLUMNS], rows)


def gates_table(outcome: dict) -> str:
    if not outcome.get("gates"):
        return "<p>No gates ran: " + _esc("; ".join(outcome.get("reasons", [])) or "—") + "</p>"
    rows = [[_esc(g["name"]), _cell(g["value"], "{:.4f}"),
             _esc(f"{g['op']} ") + _cell(g["threshold"], "{:.4g}"),
             "yes" if g["passed"] else '<span class="fail">no</span>'] for g in outcome["gates"]]
    reasons = "".join(f"<li>{_esc(r)}</li>" for r in outcome.get("reasons", []))
    return table(["gate", "value", "threshold", "passed"], rows) + (f"<ul>{reasons}</ul>" if reasons else "")


def variants_table(compression: dict) -> str:
    rows = [[_esc(v["name"] + (" (selected)" if v["name"] == compression.get("selected") else "")),
             _esc(v.get("method", "")), _cell(v.get("accuracy"), "{:.4f}"),
             _cell(v.get("latency_ms_p95"), "{:.3f}"), _cell(v.get("size_bytes"), "kb"),
             "yes" if v.get("fits") else "no"] for v in compression.get("variants", [])]
    return (table(["variant", "method", "accuracy", "p95 ms", "KB", "fits budget"], rows)
            + f"<p>{_esc(compression.get('reason', ''))}</p>")


def recall_table(per_class: dict) -> str:
    return table(["class", "recall"], [[_esc(c), _cell(r, "{:.4f}")] for c, r in per_class.items()])


def figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def header(outcome: dict) -> str:
    verdict = outcome.get("verdict", "unknown")
    facts = [("candidate", f"{outcome.get('version')} — {outcome.get('role')} "
                           f"({outcome.get('arch')}, compression {outcome.get('compression', 'none')})"),
             ("champion before", outcome.get("champion_before") or "none"),
             ("data version", outcome.get("data_version")), ("params hash", outcome.get("params_hash")),
             ("git commit", outcome.get("git_commit")), ("run", outcome.get("run_id")),
             ("time", outcome.get("time"))]
    items = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in facts if v is not None)
    return (f'<h1>Evergreen run <span class="verdict {_esc(verdict)}">{_esc(verdict)}</span></h1>'
            f"<ul>{items}</ul>")


def render_run_report(outcome: dict, metrics: dict, compression: dict | None,
                      figures: dict[str, bytes], links: dict[str, str], stages: dict | None = None) -> str:
    """The page: verdict and facts, gates, metrics per model, plots, variants, links."""
    ran = ", ".join(n for n, s in (stages or {}).items() if s.get("ran")) or "none (all current)"
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
             f"<title>Evergreen run {_esc(outcome.get('version'))}</title><style>{STYLE}</style>"
             "</head><body>", header(outcome)]
    if stages is not None:
        parts.append(f"<p>Stages run: {_esc(ran)}</p>")
    parts += ["<h2>Gates</h2>", gates_table(outcome), "<h2>Test metrics</h2>", models_table(metrics)]
    parts += [figure(figures[name], caption) for name, caption in FIGURES if name in figures]
    if compression:
        parts += ["<h2>Compression variants</h2>", variants_table(compression)]
    if metrics.get("per_class_recall"):
        parts += ["<h2>Per-class recall (candidate)</h2>", recall_table(metrics["per_class_recall"])]
    if links:
        items = "".join(f'<li><a href="{_esc(href)}">{_esc(label)}</a></li>' for label, href in links.items())
        parts += ["<h2>Other reports</h2>", f"<ul>{items}</ul>"]
    return "\n".join(parts + ["</body></html>\n"])


def read_figures(folder: Path) -> dict[str, bytes]:
    """The report's PNGs that exist in `folder`."""
    return {name: (folder / name).read_bytes() for name, _ in FIGURES if (folder / name).exists()}
