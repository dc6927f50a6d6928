"""Live drift on the champion's own reference: a brighter stream and a stream of two classes
fire within one window; unshifted streams of the same length never fire, in 20 draws."""

import numpy as np
import pytest

from evergreen.config import ValidateConfig


@pytest.fixture(scope="module")
def served(champion_ws):
    from app.api_state import drift_reference
    from mains.versions import load_registry
    from tasks.serve import ServedModel

    registry = load_registry(champion_ws.registry)
    model = ServedModel.load("v1", champion_ws.root / registry["versions"]["v1"]["path"], 1)
    return model, drift_reference(champion_ws, registry, model, 2000)


def one_window(served, x: np.ndarray) -> dict:
    from tasks.serve import DriftMonitor, pixel_means

    model, reference = served
    cfg = ValidateConfig()
    monitor = DriftMonitor(reference, len(x), cfg.max_pixel_psi, cfg.min_label_shift_pvalue)
    classes = np.asarray(model.card["classes"])
    predicted = classes[model.predict(x).argmax(1)].tolist()
    half = len(x) // 2
    assert monitor.add(pixel_means(x[:half]), predicted[:half]) is None  # not a window yet
    return monitor.add(pixel_means(x[half:]), predicted[half:])


def test_unshifted_streams_never_fire_in_20_draws(served, digits):
    held_out = digits.x[1000:]  # digits the champion never saw, from the same source
    windows = [one_window(served, held_out[np.random.default_rng(seed).integers(0, len(held_out), 500)])
               for seed in range(20)]
    assert not any(w["drifted"] for w in windows), [w["reasons"] for w in windows if w["drifted"]]
    assert all(w["samples"] == 500 for w in windows)


def test_a_brighter_stream_fires_on_pixels(served, digits):
    x = digits.x[1000:1500]
    window = one_window(served, np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8))
    assert window["drifted"] and any(r.startswith("pixel shift") for r in window["reasons"])


def test_a_stream_of_other_classes_fires_on_the_predicted_classes(served, digits):
    pool = np.flatnonzero(np.isin(digits.labels[1000:], ["0", "1"])) + 1000
    x = digits.x[np.random.default_rng(0).choice(pool, 500)]
    window = one_window(served, x)
    assert window["drifted"]
    assert any(r.startswith("predicted-class shift") for r in window["reasons"])
    assert set(window["predicted_counts"]) <= {"0", "1", *window["predicted_counts"]}


def test_windows_past_a_stuck_publisher_are_skipped_and_reported_once_a_second(tmp_path):
    import threading

    from app.api import PUBLISH_BACKLOG, Drift
    from evergreen.config import Config
    from evergreen.workspace import Workspace, read_json

    ws = Workspace(tmp_path)
    ws.reports.mkdir(parents=True, exist_ok=True)
    stuck, published, seen = threading.Event(), [], []

    def on_window(window):
        published.append(window["n"])
        stuck.wait(10)

    class Metrics:
        def drift(self, window):
            seen.append(window["n"])

    drift = Drift(ws, Config(), None, Metrics(), on_window)
    for n in range(PUBLISH_BACKLOG + 40):  # the first blocks the publisher; the rest queue or skip
        drift.closed({"n": n, "drifted": n >= 10, "samples": 500, "reasons": ["pixel shift"]})
    stuck.set()
    drift.publisher.shutdown(wait=True)
    assert seen == list(range(PUBLISH_BACKLOG + 40))  # every window reaches the metrics
    assert published == list(range(PUBLISH_BACKLOG))  # in order, at most the backlog
    assert read_json(ws.reports / "serving.json")["drift"]["n"] == 10  # the change of verdict
