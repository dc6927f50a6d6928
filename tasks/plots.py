"""Plots and plot data for the reports, as PNG and CSV bytes (matplotlib, Agg; imported only
when drawing); mains/ writes them."""

from __future__ import annotations

import csv
import io


def figure_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_png(history: list[dict], title: str) -> bytes:
    """Training curves: loss (train, val) and validation accuracy per epoch."""
    plt = pyplot()
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
    return figure_png(fig)


def confusion_png(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    plt = pyplot()
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
    return figure_png(fig)


def confusion_rows(matrix: list[list[int]], classes: list[str]) -> bytes:
    """One row per test sample (actual, predicted): the input of DVC's confusion template."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["actual", "predicted"])
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            writer.writerows([[classes[i], classes[j]]] * n)
    return buf.getvalue().encode()


def roc_curves(y, proba, n_classes: int) -> dict[int, tuple]:
    """One-vs-rest ROC (fpr, tpr, auc) per class present in `y` with both outcomes."""
    import numpy as np
    from sklearn.metrics import auc, roc_curve

    curves = {}
    for k in range(n_classes):
        positive = np.asarray(y) == k
        if 0 < positive.sum() < len(positive):
            fpr, tpr, _ = roc_curve(positive, proba[:, k])
            curves[k] = (fpr, tpr, float(auc(fpr, tpr)))
    return curves


def roc_rows(y, proba, curves: dict[int, tuple], points: int = 101) -> bytes:
    """Micro- and macro-averaged ROC on a common FPR grid: the input of a DVC plot."""
    import numpy as np
    from sklearn.metrics import roc_curve

    grid = np.linspace(0.0, 1.0, points)
    onehot = np.eye(proba.shape[1])[np.asarray(y)]
    fpr, tpr, _ = roc_curve(onehot.ravel(), proba.ravel())
    micro = np.interp(grid, fpr, tpr)
    macro = (np.mean([np.interp(grid, f, t) for f, t, _ in curves.values()], axis=0)
             if curves else np.zeros_like(grid))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["fpr", "tpr_micro", "tpr_macro"])
    writer.writerows([f"{a:.4f}", f"{b:.6f}", f"{c:.6f}"] for a, b, c in zip(grid, micro, macro))
    return buf.getvalue().encode()


def roc_png(curves: dict[int, tuple], classes: list[str], title: str) -> bytes:
    """Per-class one-vs-rest ROC curves, AUC in the legend; a log FPR axis keeps good ones apart."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    floor = 1e-3  # FPR 0 drawn at the axis' left edge
    for k, (fpr, tpr, area) in curves.items():
        ax.step(np.maximum(fpr, floor), tpr, where="post", color=cmap(k % cmap.N), lw=1.4,
                label=f"{classes[k]} (AUC {area:.4f})")
    chance = np.logspace(-3, 0, 50)
    ax.plot(chance, chance, ":", color="gray", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    # zoom in on the top when every curve is already high at the left edge
    lowest = min((float(np.interp(floor, fpr, tpr)) for fpr, tpr, _ in curves.values()), default=0.0)
    ax.set_ylim(max(0.0, np.floor((lowest - 0.02) * 10) / 10), 1.005)
    ax.set_xlabel("false positive rate (log scale)")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(curves) > 10 else 1)
    ax.set_title(title)
    return figure_png(fig)


def pick_samples(y, pred, count: int) -> list[int]:
    """Test indices to show: misclassified ones first (up to half the grid), then correct ones."""
    import numpy as np

    wrong = np.flatnonzero(pred != y)
    right = np.flatnonzero(pred == y)
    n_wrong = min(len(wrong), max(count // 2, count - len(right)))
    return [*wrong[:n_wrong].tolist(), *right[:count - n_wrong].tolist()]


def predictions_png(x, y, proba, classes: list[str], count: int = 32) -> bytes:
    """A grid of test images titled `actual → predicted (p)`; misclassified ones in red first."""
    import numpy as np

    plt = pyplot()
    pred = proba.argmax(1)
    picks = pick_samples(np.asarray(y), pred, min(count, len(y)))
    cols = 8
    rows = max(1, -(-len(picks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        img = x[i]
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                  cmap="gray" if img.shape[0] == 1 else None, interpolation="nearest")
        ok = pred[i] == y[i]
        ax.set_title(f"{classes[y[i]]}→{classes[pred[i]]} ({proba[i, pred[i]]:.2f})", fontsize=7,
                     color="tab:green" if ok else "tab:red")
    wrong = int((pred != np.asarray(y)).sum())
    fig.suptitle(f"test predictions (actual→predicted): {wrong} of {len(y)} misclassified, "
                 "shown first in red", fontsize=9)
    return figure_png(fig)
