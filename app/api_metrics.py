"""What GET /metrics reports, in the Prometheus text format (prometheus_client, which Prefect
already depends on): requests by route and status, latency, batch sizes, the model version,
feedback counts and the last drift window."""

from __future__ import annotations


class ApiMetrics:
    """One app's metrics in their own registry (two apps in one process do not mix)."""

    def __init__(self, max_batch: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("evergreen_requests", "requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("evergreen_predict_seconds", "POST /predict time, read to answer",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                 registry=self.registry)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch})
        self.batch_size = Histogram("evergreen_batch_size", "images per forward pass",
                                    buckets=[s for s in sizes if s <= max_batch],
                                    registry=self.registry)
        self.version = Gauge("evergreen_model_info", "the version serving (value 1)", ["version"],
                             registry=self.registry)
        self.feedback = Counter("evergreen_feedback", "labels received (POST /feedback)",
                                registry=self.registry)
        self.feedback_batches = Counter("evergreen_feedback_batches", "feedback batches dropped",
                                        registry=self.registry)
        self.windows = Counter("evergreen_drift_windows", "drift windows tested, by outcome",
                               ["drifted"], registry=self.registry)
        self.psi = Gauge("evergreen_drift_pixel_psi", "the last window's pixel PSI",
                         registry=self.registry)
        self.class_pvalue = Gauge("evergreen_drift_class_pvalue", "the last window's "
                                  "predicted-class chi-square p-value", registry=self.registry)

    def model(self, version: str) -> None:
        self.version.clear()
        self.version.labels(version).set(1)

    def drift(self, window: dict) -> None:
        self.windows.labels(str(window["drifted"]).lower()).inc()
        self.psi.set(window["pixel_psi"])
        self.class_pvalue.set(window["class_pvalue"])

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
