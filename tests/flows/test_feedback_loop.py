"""The loop `evergreen api` closes: served inputs labelled through POST /feedback land as a
batch in the drop folder, the watcher ingests it and retrains, the gate decides, and the server
reloads the new champion or keeps the old one with the reasons recorded; labels shuffled by the
sender never reach the champion."""

import time

import numpy as np
import pytest

from app.watch import watch_folder
from mains.versions import load_registry
from tests.app.test_api import Server
from tests.conftest import write_params
from tests.flows.test_retrain_flow import DRIFT_PARAMS, champion_ws, other_light, ws  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]
N = 300  # labelled inputs: one feedback batch


def png(img: np.ndarray) -> bytes:
    from tests.app.hostile.helpers import png_bytes

    return png_bytes(img[0])


def test_feedback_on_a_new_light_retrains_and_the_server_follows_the_gate(ws, digits):  # noqa: F811
    write_params(ws.root, DRIFT_PARAMS)
    with Server(ws, feedback_batch=N) as api:
        serve_and_label(api, digits, digits.labels[1000:1000 + N])
    summary = watch_folder(ws, ws.root / "drops", once=True, overrides=["watch.retrain=local"])
    assert len(summary.landed) == 1 and not summary.failed and not summary.retrain_errors
    registry = load_registry(ws.registry)
    entry = registry["candidates"][-1]
    assert entry["trigger"] == "continual-retraining" and entry["retrain"]["new_batches"] == summary.landed
    assert entry["verdict"] in ("promoted", "rejected")
    with Server(ws) as api:  # a server started before the retrain would have reloaded as this one
        deadline = time.time() + 10
        while api.client.get("/health").json()["version"] != registry["champion"]:
            assert time.time() < deadline
            time.sleep(0.05)
    if entry["verdict"] == "rejected":
        assert registry["champion"] == "v1" and entry["reasons"]  # kept, with the reasons
    else:
        assert registry["champion"] == entry["version"] != "v1"


def test_feedback_with_shuffled_labels_never_reaches_the_champion(ws, digits):  # noqa: F811
    write_params(ws.root, DRIFT_PARAMS)
    labels = np.random.default_rng(0).permutation(digits.labels[1000:1000 + N])
    registry = ws.registry.read_text()
    with Server(ws, feedback_batch=N) as api:
        serve_and_label(api, digits, labels)
        summary = watch_folder(ws, ws.root / "drops", once=True, overrides=["watch.retrain=local"])
        assert summary.landed and summary.retrain_errors  # landed, then refused by the noise screen
        time.sleep(0.5)  # a reload, were there one, would have happened
        assert api.client.get("/health").json()["version"] == "v1"
    assert ws.registry.read_text() == registry
    (held,) = ws.quarantine.iterdir()
    assert "suspected label noise" in (held / "reasons.txt").read_text()


def serve_and_label(api, digits, labels) -> None:
    """Serve N unseen digits under other light and send `labels` back as feedback: the last
    one completes the batch."""
    idx = np.arange(1000, 1000 + N)
    ids = []
    for start in range(0, N, 25):
        answer = api.predict_files([png(img) for img in other_light(digits.x[idx[start:start + 25]])])
        ids += [p["id"] for p in answer.json()["predictions"]]
    replies = [api.client.post("/feedback", json={"prediction_id": i, "label": str(y)}).json()
               for i, y in zip(ids, labels, strict=True)]
    assert replies[-1]["batch"] and all(r["batch"] is None for r in replies[:-1])
