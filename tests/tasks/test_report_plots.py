"""Report plots (ROC, sample grid), the HTML run report, and DVC plots rendering."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from mains.figures import write_prediction_plots
from tasks.plots import pick_samples, roc_curves, roc_rows
from tasks.run_page import FIGURES, render_run_report

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = [str(c) for c in range(10)]


def fake_predictions(n: int = 120, wrong: int = 7, seed: int = 0):
    """Labels and confident probabilities, `wrong` of them pointing at the next class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    pred = y.copy()
    pred[:wrong] = (y[:wrong] + 1) % 10
    proba = rng.uniform(0, 0.05, (n, 10))
    proba[np.arange(n), pred] += rng.uniform(0.5, 1.0, n)
    return y, proba / proba.sum(1, keepdims=True)


def test_roc_of_a_perfect_ranking_is_one_and_its_rows_span_the_grid():
    y, proba = fake_predictions(wrong=0)
    curves = roc_curves(y, proba, 10)
    assert sorted(curves) == list(range(10))
    assert all(area == pytest.approx(1.0) for _, _, area in curves.values())
    rows = list(csv.DictReader(io.StringIO(roc_rows(y, proba, curves).decode())))
    assert len(rows) == 101 and rows[0]["fpr"] == "0.0000" and rows[-1]["fpr"] == "1.0000"
    micro = [float(r["tpr_micro"]) for r in rows]
    assert micro == sorted(micro) and micro[-1] == pytest.approx(1.0)


def test_roc_skips_a_class_without_negatives_or_positives():
    y, proba = fake_predictions()
    curves = roc_curves(y[y != 3], proba[y != 3], 10)
    assert 3 not in curves and len(curves) == 9


def test_sample_grid_shows_misclassified_first_then_correct():
    y, proba = fake_predictions(wrong=5)
    pred = proba.argmax(1)
    picks = pick_samples(y, pred, 16)
    assert len(picks) == 16 and len(set(picks)) == 16
    assert all(pred[i] != y[i] for i in picks[:5]) and all(pred[i] == y[i] for i in picks[5:])
    assert len(pick_samples(y, pred, 4)) == 4  # more mistakes than half the grid: half of each
    assert sum(pred[i] != y[i] for i in pick_samples(y, pred, 4)) == 2


def test_prediction_plots_are_written(tmp_path, digits):
    x = digits.x[:120]
    y, proba = fake_predictions()
    write_prediction_plots(tmp_path, (x, y), proba, CLASSES)
    for name in ("figures/roc.png", "figures/predictions.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert (tmp_path / "plots/roc.csv").read_text().startswith("fpr,tpr_micro,tpr_macro")


OUTCOME = {"verdict": "rejected", "version": "v3", "role": "selected", "arch": "seed_cnn",
           "compression": "int8", "champion_before": "v2", "data_version": "abc123",
           "gates": [{"name": "accuracy", "value": 0.97, "op": ">=", "threshold": 0.95, "passed": True},
                     {"name": "f1_macro", "value": 0.90, "op": ">=", "threshold": 0.95, "passed": False}],
           "reasons": ["f1_macro 0.9000 below 0.95"]}
METRICS = {"candidate": "selected", "per_class_recall": {"<b>cat</b>": 0.5, "dog": 1.0},
           **{role: {"accuracy": 0.97, "f1_macro": 0.9, "latency_ms_p95": 1.5, "size_bytes": 20480,
                     "params": 12345, "roc_auc_ovr": None} for role in ("teacher", "selected")}}


def test_run_report_embeds_every_figure_and_flags_failed_gates():
    figures = {name: PNG + bytes([i]) * 64 for i, (name, _) in enumerate(FIGURES)}
    page = render_run_report(OUTCOME, METRICS, {"variants": [], "selected": None, "reason": "none fits"},
                             figures, {"data validation": "validation.html"}, {"train": {"ran": True}})
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'src="(https?:|file:|/)', page)  # self-contained
    assert '<span class="fail">no</span>' in page and "f1_macro 0.9000 below 0.95" in page
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>cat</b>" not in page
    assert 'href="validation.html"' in page and "selected (candidate)" in page
    assert "Stages run: train" in page


def test_run_report_without_optional_parts():
    page = render_run_report({**OUTCOME, "gates": [], "reasons": ["candidate is the champion"]},
                             {"candidate": "selected", "selected": METRICS["selected"]}, None, {}, {})
    assert "No gates ran: candidate is the champion" in page and "<img" not in page


def test_write_run_report_reads_the_workspace(tmp_path):
    from evergreen.workspace import Workspace, write_json
    from flows.run_report import write_run_report

    ws = Workspace(tmp_path)
    write_json(ws.reports / "metrics.json", METRICS)
    (ws.reports / "figures").mkdir(parents=True)
    (ws.reports / "figures" / "roc.png").write_bytes(PNG)
    (ws.reports / "validation.html").write_text("<html></html>")
    (ws.reports / "ingest").mkdir()
    (ws.reports / "ingest" / "b1.html").write_text("<html></html>")
    page = write_run_report(ws, OUTCOME).read_text()
    assert page.count("<img") == 1
    assert 'href="validation.html"' in page and 'href="ingest/b1.html"' in page


def write_plot_inputs(reports, digits):
    """Every file dvc.yaml declares as a plot, from the real plot writers."""
    from evergreen.workspace import atomic_write_bytes, write_csv
    from mains.figures import write_evaluation_plots
    from tasks.plots import history_png

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_acc": 1 - 0.1 / e, "lr": 0.01}
               for e in range(1, 4)]
    for stage in ("train", "compress"):
        write_csv(reports / "plots" / f"{stage}.csv", history)
        atomic_write_bytes(reports / "figures" / f"{stage}_curves.png", history_png(history, stage))
    (reports / "figures" / "pareto.png").write_bytes((reports / "figures" / "train_curves.png").read_bytes())
    y, proba = fake_predictions()
    from sklearn.metrics import confusion_matrix

    write_evaluation_plots(reports, {"confusion_matrix": confusion_matrix(y, proba.argmax(1)).tolist(),
                                     "accuracy": 0.94}, CLASSES)
    write_prediction_plots(reports, (digits.x[:120], y), proba, CLASSES)


def test_dvc_plots_show_renders_every_declared_plot(tmp_path, digits):
    import yaml

    from evergreen import dvcfile
    from evergreen.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    dvcfile.init_workspace(ws)
    write_plot_inputs(ws.reports, digits)
    declared = yaml.safe_load((ws.root / "dvc.yaml").read_text())
    top = [next(iter(p)) for p in declared["plots"]]
    stage = [next(iter(p)) for s in declared["stages"].values() for p in s.get("plots", [])]
    for path in {*top, *stage}:
        assert (ws.root / path).exists(), f"dvc.yaml declares {path}; the writers do not write it"
    out = tmp_path / "plots_html"
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out)], cwd=ws.root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    page = (out / "index.html").read_text()
    drawn = re.findall(r"vegaEmbed\('#([^']+)'", page)
    # each data plot once, drawn with the axes dvc.yaml gives it (not twice, once with defaults)
    assert sorted(drawn) == sorted(re.sub(r"[/.]", "_", path) for path in top), drawn
    assert '"title": "false positive rate"' in page and '"title": "epoch"' in page
    assert "roc.png" in page and "predictions.png" in page
