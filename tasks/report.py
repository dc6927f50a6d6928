"""Plots and plot data for the reports (matplotlib, Agg; imported only when drawing)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from evergreen.workspace import atomic_write_bytes


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], path: Path, title: str) -> None:
    """Training curves: loss (train, val) and validation accuracy per epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["val_acc"] for r in history], color="tab:green")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("val accuracy")
    fig.suptitle(title)
    atomic_write_bytes(path, _figure_bytes(fig))


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            if n:
                ax.text(j, i, n, ha="center", va="center", fontsize=8,
                        color="white" if n > peak / 2 else "black")
    ax.set_title(title)
    atomic_write_bytes(path, _figure_bytes(fig))


def confusion_rows(matrix: list[list[int]], classes: list[str]) -> bytes:
    """One row per test sample (actual, predicted): the input of DVC's confusion template."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["actual", "predicted"])
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            writer.writerows([[classes[i], classes[j]]] * n)
    return buf.getvalue().encode()


def write_evaluation_plots(reports: Path, metrics: dict, classes: list[str]) -> None:
    matrix = metrics["confusion_matrix"]
    atomic_write_bytes(reports / "plots" / "confusion.csv", confusion_rows(matrix, classes))
    plot_confusion(matrix, classes, reports / "figures" / "confusion_matrix.png",
                   f"candidate confusion matrix (accuracy {metrics['accuracy']:.4f})")
