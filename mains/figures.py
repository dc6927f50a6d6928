"""The evaluate stage's figures and plot data under reports/: confusion matrix, ROC, predictions."""

from __future__ import annotations

from pathlib import Path

from evergreen.workspace import atomic_write_bytes


def write_evaluation_plots(reports: Path, metrics: dict, classes: list[str]) -> None:
    """The candidate's confusion matrix: DVC plot data and a figure."""
    from tasks.plots import confusion_png, confusion_rows

    matrix = metrics["confusion_matrix"]
    atomic_write_bytes(reports / "plots" / "confusion.csv", confusion_rows(matrix, classes))
    atomic_write_bytes(reports / "figures" / "confusion_matrix.png", confusion_png(
        matrix, classes, f"candidate confusion matrix (accuracy {metrics['accuracy']:.4f})"))


def write_prediction_plots(reports: Path, test: tuple, proba, classes: list[str]) -> None:
    """Per-class ROC (PNG and DVC plot data) and the sample-prediction grid of the candidate."""
    from tasks.plots import predictions_png, roc_curves, roc_png, roc_rows

    x, y = test
    curves = roc_curves(y, proba, len(classes))
    atomic_write_bytes(reports / "plots" / "roc.csv", roc_rows(y, proba, curves))
    atomic_write_bytes(reports / "figures" / "roc.png",
                       roc_png(curves, classes, "candidate ROC, one-vs-rest (test)"))
    atomic_write_bytes(reports / "figures" / "predictions.png", predictions_png(x, y, proba, classes))
