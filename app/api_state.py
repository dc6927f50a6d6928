"""What `evergreen api` keeps between requests: the champion serving now (swapped whole when the
registry names another) with its drift reference, and the serving report (the last drift
window, feedback counts) that `evergreen status` shows, with the Prefect event and artifact a
drifted window sends."""

from __future__ import annotations

import logging

import numpy as np

from evergreen.workspace import Workspace, read_json, write_json

log = logging.getLogger("evergreen.api")
DRIFT_EVENT = "evergreen.drift.detected"
REPORT = "serving.json"  # under reports/


class Champion:
    """The model serving now, and the reference its drift is measured against."""

    def __init__(self, ws: Workspace, threads: int, reference_size: int):
        self.ws, self.threads, self.reference_size = ws, threads, reference_size
        self.current = None  # tasks.serve.ServedModel
        self.reference = None  # tasks.serve.DriftReference of the current model
        self.stamp = None

    def refresh(self) -> bool:
        """Load the registry's champion if it changed (call off the event loop); True if swapped."""
        from mains.versions import load_registry
        from tasks.serve import ServedModel

        try:
            info = self.ws.registry.stat()
        except FileNotFoundError:
            return False
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self.stamp:
            return False
        registry = load_registry(self.ws.registry)
        version = registry["champion"]
        swap = version is not None and not (self.current and self.current.version == version)
        if swap:
            model = ServedModel.load(version, self.ws.root / registry["versions"][version]["path"],
                                     self.threads)
            reference = drift_reference(self.ws, registry, model, self.reference_size)
            self.current, self.reference = model, reference  # whole, before it serves a request
            log.info("api: serving %s (%s)", version, model.runtime)
        self.stamp = stamp  # only once read (and loaded): a failed load is tried at the next poll
        return swap

    def infer(self, x: np.ndarray):
        """(probabilities, the ServedModel that computed them), whatever swaps meanwhile."""
        model = self.current
        return model.predict(x), model


def drift_reference(ws: Workspace, registry: dict, model, size: int):
    """The champion's training images' mean intensities (its lineage's batches) and its
    predicted classes on up to `size` test images (the training labels without a split)."""
    import pandas as pd

    from evergreen.errors import EvergreenError
    from mains.processed import load_split
    from tasks.data import sample_positions
    from tasks.ingest import read_metadata
    from tasks.promote import champion_entry
    from tasks.serve import DriftReference

    meta = read_metadata(ws.batches)
    batches = ((champion_entry(registry, model.version) or {}).get("lineage") or {}).get("batches")
    if batches:
        meta = meta[meta["batch_id"].isin(batches)]
    classes = np.asarray(model.card["classes"])
    try:
        test, _ = load_split(ws, "test")
        picked = test[sample_positions(len(test), size, 0)]
        predicted = classes[model.predict(picked).argmax(1)]
    except (EvergreenError, OSError, KeyError, ValueError):  # no split index: the labels
        predicted = meta["label"].to_numpy(str)
    return DriftReference(model.version, meta["pixel_mean"].to_numpy(float), pd.Series(predicted))


def write_report(ws: Workspace, **parts) -> dict:
    """Merge `parts` into reports/serving.json (the last window, feedback counts)."""
    path = ws.reports / REPORT
    report = read_json(path) if path.exists() else {}
    report.update(parts)
    write_json(path, report)
    return report


CALM_EVERY_S = 300.0  # a window without drift reaches the UI at most this often; drift always


class Publisher:
    """Closed drift windows in the Prefect UI: each as a `serving-window` flow run with a
    markdown artifact of its figures and the feedback counts (one without drift at most every
    CALM_EVERY_S), and for a drifted one the evergreen.drift.detected event. Nothing without a
    Prefect server (PREFECT_API_URL): the report and `evergreen status` still hold the window."""

    def __init__(self, ws: Workspace):
        from prefect.settings import PREFECT_API_URL

        self.ws, self.last = ws, float("-inf")
        # read once: Prefect's settings cost milliseconds a call, and windows close often
        self.configured = bool(PREFECT_API_URL.value())

    def __call__(self, window: dict) -> bool:
        import time

        if not self.configured:
            if window["drifted"]:
                log.warning("api: drift detected (%s); no Prefect server configured "
                            "(PREFECT_API_URL), so no %s event", "; ".join(window["reasons"]),
                            DRIFT_EVENT)
            return False
        if window["drifted"]:
            send_drift_event(self.ws, window)
        elif time.monotonic() - self.last < CALM_EVERY_S:
            return False
        from flows.serving import serving_window

        serving_window(window_markdown(self.ws, window), window["version"])
        self.last = time.monotonic()
        return True


def window_markdown(ws: Workspace, window: dict) -> str:
    """The window's figures and the feedback counts as a markdown table."""
    path = ws.reports / REPORT
    feedback = (read_json(path) if path.exists() else {}).get("feedback") or {}
    figures = {k: v for k, v in window.items() if not isinstance(v, dict | list)}
    figures |= {f"feedback {k}": v for k, v in feedback.items()}
    rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    verdict = "; ".join(window["reasons"]) or "no drift"
    return (f"## Served inputs: the last drift window\n\n{verdict}\n\n"
            f"| figure | value |\n|---|---|\n{rows}\n")


def send_drift_event(ws: Workspace, window: dict) -> None:
    """evergreen.drift.detected, about the workspace, with the window's figures."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from app.watch import resource_id

    emit_event(DRIFT_EVENT, resource={"prefect.resource.id": resource_id(ws),
                                      "prefect.resource.name": ws.root.name},
               payload={"workspace": str(ws.root), **window})
    EventsWorker.drain_all(timeout=30, at_exit=False)
