"""Evaluate stage: metrics on known predictions, probabilities, latency, null model."""

import numpy as np
import pytest
import torch

from evergreen.config import EvaluateConfig, PreprocessConfig
from nets import build_model
from tasks.evaluate import classification_metrics, measure_latency, null_model, predict_proba
from tasks.ingest import content_hash, metadata_table
from tasks.preprocess import preprocess
from tests.conftest import TINY_PARAMS

CLASSES = ["a", "b", "c"]


def one_hot(pred, classes=3, sure=0.9):
    """Probabilities that put `sure` on the predicted class and share the rest."""
    proba = np.full((len(pred), classes), (1 - sure) / (classes - 1))
    proba[np.arange(len(pred)), pred] = sure
    return proba


def test_perfect_prediction():
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    m = classification_metrics(y, one_hot(y), CLASSES)

    assert m["accuracy"] == 1.0
    assert m["f1_macro"] == 1.0
    assert m["precision_macro"] == m["recall_macro"] == 1.0
    assert m["roc_auc_ovr"] == 1.0
    assert m["per_class_recall"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]


def test_known_confusion():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 2, 0, 1])
    m = classification_metrics(y, one_hot(pred), CLASSES)

    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 1, 2]]  # rows: true, cols: pred
    assert m["per_class_recall"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.5})
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["recall_macro"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert 0.0 < m["roc_auc_ovr"] < 1.0


def test_class_missing_from_the_test_split_still_has_a_row():
    y = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y, one_hot(y), CLASSES)
    assert m["per_class_recall"]["c"] == 0.0
    assert m["confusion_matrix"][2] == [0, 0, 0]
    assert len(m["confusion_matrix"]) == 3


def test_predict_proba_rows_sum_to_one(tiny_batch):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, channels=[8, 16])
    card = {"mean": [0.3], "std": [0.4]}

    proba = predict_proba(model, card, tiny_batch.x, batch=64)  # several inner batches

    assert proba.shape == (len(tiny_batch), 10)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert not model.training


def test_measure_latency():
    torch.manual_seed(0)
    model = build_model("seed_cnn", (1, 8, 8), 10)
    cfg = EvaluateConfig.model_validate(TINY_PARAMS["evaluate"])

    m = measure_latency(model, (1, 8, 8), cfg)

    assert 0 < m["latency_ms_p50"] <= m["latency_ms_p95"]
    assert m["throughput"] > 0


def test_measure_latencies_times_each_model_and_serves_onnx_from_numpy(tmp_path):
    from nets.runtime import OnnxModel
    from tasks.evaluate import measure_latencies
    from tasks.export import export_onnx

    torch.manual_seed(0)
    model = build_model("seed_cnn", (1, 8, 8), 10).eval()
    export_onnx(model, (1, 8, 8), tmp_path / "model.onnx")
    served = OnnxModel(tmp_path / "model.onnx")
    seen = []
    run_numpy = served.run_numpy
    served.run_numpy = lambda x: seen.append(x) or run_numpy(x)  # records what ORT is given
    cfg = EvaluateConfig.model_validate({**TINY_PARAMS["evaluate"], "latency_runs": 12})

    m = measure_latencies({"eager": model, "onnx": served}, (1, 8, 8), cfg)

    assert set(m) == {"eager", "onnx"}
    assert all(0 < r["latency_ms_p50"] <= r["latency_ms_p95"] and r["throughput"] > 0
               for r in m.values())
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in seen)
    assert sum(len(x) == 1 for x in seen) == 10 + 12  # warm-up, then one call per run


def test_null_model_beats_chance_on_tiny_digits(tiny_batch):
    meta = metadata_table(tiny_batch, [content_hash(img) for img in tiny_batch.x], "b0")
    p = preprocess(tiny_batch.x, tiny_batch.labels, meta, PreprocessConfig())
    cfg = EvaluateConfig.model_validate(TINY_PARAMS["evaluate"])

    m, _ = null_model(p.splits["train"], p.splits["test"], p.classes, (p.mean, p.std), cfg)

    assert m["model"] == "logistic_regression"
    assert m["accuracy"] > 0.5  # chance is 0.1
    assert set(m["per_class_recall"]) == set(p.classes)


def test_the_null_model_fits_on_a_bounded_sample_of_train(tiny_batch, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    meta = metadata_table(tiny_batch, [content_hash(img) for img in tiny_batch.x], "b0")
    p = preprocess(tiny_batch.x, tiny_batch.labels, meta, PreprocessConfig())
    seen = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, x, y: seen.append(len(y)) or fit(self, x, y))
    cfg = EvaluateConfig.model_validate({**TINY_PARAMS["evaluate"], "null_model_max_samples": 60})

    m, pred = null_model(p.splits["train"], p.splits["test"], p.classes, (p.mean, p.std), cfg)

    assert seen == [60] < [len(p.splits["train"][1])]
    assert len(pred) == len(p.splits["test"][1]) and m["accuracy"] > 0.3  # chance is 0.1


def test_the_null_model_sees_thumbnails_of_large_images(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.integers(0, 60, (120, 3, 40, 40)).astype(np.uint8)
    x[:, :, :, :20] += (y * 60).astype(np.uint8)[:, None, None, None]  # the class: left half's level
    widths = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit",
                        lambda self, f, t: widths.append(f.shape[1]) or fit(self, f, t))
    cfg = EvaluateConfig(null_model_max_side=8)

    m, _ = null_model((x[::2], y[::2]), (x[1::2], y[1::2]), ["a", "b", "c"],
                      ([0.3] * 3, [0.2] * 3), cfg)

    assert widths == [3 * 8 * 8] and m["accuracy"] > 0.9
