"""Evaluate: test-split metrics, CPU latency and size of each model, and a null model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torch import nn

from evergreen.config import EvaluateConfig
from nets.inputs import normalize
from nets.memory import release_free_memory
from tasks.data import chunks


@torch.no_grad()
def predict_proba(model: nn.Module, card: dict, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Class probabilities (N, classes) for uint8 images (N, C, H, W): an array, or
    tasks.data.Images read block by block."""
    model.eval()
    probs = []
    for block in chunks(x, batch):
        inputs = normalize(torch.from_numpy(block), card["mean"], card["std"])
        probs.append(torch.softmax(model(inputs), dim=1).numpy())
        release_free_memory()  # a batch's activations, not the split's (nets/memory.py)
    return np.concatenate(probs) if probs else np.zeros((0, len(card["classes"])), np.float32)


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, one-vs-rest ROC-AUC, per-class recall, confusion."""
    pred = proba.argmax(1)
    labels = list(range(len(classes)))
    present = np.unique(y)
    auc = None
    if len(present) == 2:
        auc = float(roc_auc_score(y == present[1], proba[:, present[1]]))
    elif len(present) > 2:
        scores = proba[:, present] / np.maximum(proba[:, present].sum(1, keepdims=True), 1e-12)
        auc = float(roc_auc_score(y, scores, multi_class="ovr", labels=present))
    per_class = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision_macro": float(precision_score(y, pred, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y, pred, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "roc_auc_ovr": auc,
        "per_class_recall": {c: float(r) for c, r in zip(classes, per_class, strict=False)},
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
    }


def batch_call(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One forward pass on `x` as the model is served: an ONNX model gets numpy directly."""
    if hasattr(model, "run_numpy"):
        array = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        return lambda: model.run_numpy(array)
    return lambda: model(x)


class Timing(Protocol):
    """How latency is measured: evaluate's section, or compress.select when it picks a variant."""

    latency_runs: int
    throughput_batch: int


@torch.no_grad()
def measure_latencies(models: dict[str, nn.Module], in_shape: tuple[int, ...],
                      cfg: Timing) -> dict[str, dict]:
    """Batch-1 latency p50/p95 (ms) and batch throughput (images/s) of each model on this CPU.

    Batch-1 calls go round-robin across the models, so a change in machine load hits them
    all alike and their ratios hold even on a busy machine.
    """
    one, batch = torch.randn(1, *in_shape), torch.randn(cfg.throughput_batch, *in_shape)
    calls = {}
    for name, model in models.items():
        model.eval()
        calls[name] = batch_call(model, one)
        for _ in range(10):
            calls[name]()
    times = {name: [] for name in models}
    for _ in range(cfg.latency_runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"latency_ms_p50": float(np.percentile(times[name], 50)),
                   "latency_ms_p95": float(np.percentile(times[name], 95)),
                   "latency_runs": cfg.latency_runs,
                   "throughput": throughput(batch_call(model, batch), cfg.throughput_batch)}
            for name, model in models.items()}


def throughput(call: Callable[[], object], batch_size: int, reps: int = 5) -> float:
    call()
    start = time.perf_counter()
    for _ in range(reps):
        call()
    return float(reps * batch_size / (time.perf_counter() - start))


def side_by_side_latency(champion: nn.Module, candidate: nn.Module, in_shape: tuple[int, ...],
                         cfg: Timing) -> dict:
    """Batch-1 p50 of the candidate and the champion, their calls interleaved, and the ratio:
    a busy neighbour slows both alike, so the ratio holds where absolute times do not."""
    times = measure_latencies({"champion": champion, "candidate": candidate}, in_shape, cfg)
    champ, cand = times["champion"]["latency_ms_p50"], times["candidate"]["latency_ms_p50"]
    return {"champion_ms": champ, "candidate_ms": cand, "ratio": cand / max(champ, 1e-9)}


def measure_latency(model: nn.Module, in_shape: tuple[int, ...], cfg: EvaluateConfig) -> dict:
    """Batch-1 latency p50/p95 (ms) and batch throughput (images/s) of one model."""
    return measure_latencies({"model": model}, in_shape, cfg)["model"]


def evaluate_model(model: nn.Module, card: dict, weights: Path, test: tuple[np.ndarray, np.ndarray],
                   cfg: EvaluateConfig, null_pred: np.ndarray | None = None) -> dict:
    """Everything the gate and the reports need about one model; with the null model's test
    predictions, McNemar's test of the two on the same samples (`vs_null`)."""
    from tasks.promote import mcnemar

    x, y = test
    proba = predict_proba(model, card, x)
    metrics = classification_metrics(y, proba, card["classes"])
    if null_pred is not None:
        metrics["vs_null"] = mcnemar(null_pred == y, proba.argmax(1) == y)
    metrics.update(measure_latency(model, tuple(card["in_shape"]), cfg))
    metrics["params"] = int(sum(p.numel() for p in model.parameters()))
    metrics["size_bytes"] = int(weights.stat().st_size)
    return metrics


def null_model(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
               classes: list[str], norm: tuple[list[float], list[float]],
               cfg: EvaluateConfig) -> tuple[dict, np.ndarray]:
    """A scikit-learn baseline, logistic regression on the normalized pixels of at most
    evaluate.null_model_max_samples train images, averaged down to at most null_model_max_side
    (a thumbnail keeps what a linear model can use: on GTSRB's 32 px the full pixels cost 70 s):
    its test metrics and test predictions."""
    def flat(x: np.ndarray) -> np.ndarray:
        pixels = normalize(torch.from_numpy(x), *norm)
        if max(pixels.shape[2:]) > cfg.null_model_max_side:
            side = [min(d, cfg.null_model_max_side) for d in pixels.shape[2:]]
            pixels = F.adaptive_avg_pool2d(pixels, side)
        return pixels.flatten(1).numpy()

    # a baseline needs no more: its cost grows with samples x pixels x classes x iterations
    keep = np.sort(np.random.default_rng(0).permutation(len(train[1]))[:cfg.null_model_max_samples])
    clf = LogisticRegression(max_iter=cfg.null_model_max_iter)
    clf.fit(flat(train[0][keep]), train[1][keep])
    proba = np.zeros((len(test[1]), len(classes)))
    proba[:, clf.classes_] = np.concatenate([clf.predict_proba(flat(block))
                                             for block in chunks(test[0])])
    metrics = classification_metrics(test[1], proba, classes)
    return {"model": "logistic_regression", **metrics}, proba.argmax(1)


def label_indices(labels: np.ndarray, classes: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Each label's index in `classes`, and the labels not among them with their counts
    (their samples get index -1)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(str(label), -1) for label in labels], dtype=np.int64)
    names, counts = np.unique(np.asarray(labels, dtype=str)[y < 0], return_counts=True)
    return y, {str(n): int(k) for n, k in zip(names, counts, strict=True)}


def source_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """classification_metrics on a labelled source, with its sample count and per-class support
    (a class without samples has recall 0 there; its support says it was not measured)."""
    support = np.bincount(y, minlength=len(classes))
    return {"samples": int(len(y)), **classification_metrics(y, proba, classes),
            "support": {c: int(n) for c, n in zip(classes, support, strict=True)}}
