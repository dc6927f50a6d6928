"""The ui, watch and serve sections: the long-running commands."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from evergreen.config.section import Section


class UiConfig(Section):
    """`evergreen ui`: the local Prefect server (EVERGREEN_UI_HOST / EVERGREEN_UI_PORT win)."""

    host: str = Field("127.0.0.1", min_length=1, description="bind address; loopback keeps it local")
    port: int = Field(4200, ge=1, le=65535)


class WatchConfig(Section):
    """`evergreen watch DIR`: when a drop is complete, and how its retrain starts."""

    marker: str = Field("_READY", min_length=1, pattern=r"^[^/\\]+$",
                        description="a folder drop is complete when it holds this file, "
                                    "a file drop when <file><marker> sits beside it")
    quiet_seconds: float = Field(30.0, gt=0.0, description="...or when nothing in it changed "
                                 "for this long")
    poll_seconds: float = Field(1.0, gt=0.0, description="how often pending drops are re-checked")
    force_polling: bool = Field(False, description="poll the folder instead of OS change "
                                "notifications (network mounts)")
    retrain: Literal["auto", "event", "local"] = Field(
        "auto", description="event: emit evergreen.batch.ingested for the served "
        "continual-retraining deployment; local: retrain in this process; auto: event when "
        "a Prefect server is configured (PREFECT_API_URL), else local")
    lock_wait_seconds: float = Field(3600.0, ge=0.0, description="wait this long for a busy "
                                     "workspace, then leave the drops for the next try")


class ServeConfig(Section):
    """`evergreen serve`: schedules of the training-pipeline and continual-retraining
    deployments; `evergreen api`: the champion over HTTP (bind, batching, request limits)."""

    training_cron: str | None = Field("0 2 * * *", description="training-pipeline schedule "
                                      "(cron); null: none")
    retrain_cron: str | None = Field(None, description="continual-retraining on a schedule too, "
                                     "besides its event trigger")
    timezone: str = Field("UTC", description="IANA zone the cron schedules are read in")
    lock_wait_seconds: float = Field(3600.0, ge=0.0, description="a deployment run waits this "
                                     "long for a busy workspace, then fails (exit 75)")

    host: str = Field("127.0.0.1", min_length=1, description="evergreen api's bind address; "
                      "loopback keeps it local")
    port: int = Field(8000, ge=1, le=65535, description="evergreen api's port")
    max_batch: int = Field(64, ge=1, le=4096, description="images one forward pass takes from "
                           "the queued requests (dynamic batching; 1: one request at a time)")
    max_wait_ms: float = Field(1.0, ge=0.0, le=1000.0, description="how long the first queued "
                               "request waits for others to share its forward pass")
    max_request_bytes: int = Field(20_000_000, ge=1024, description="a larger request body is "
                                   "refused (413) before it is read whole")
    max_images_per_request: int = Field(256, ge=1, description="images one request may send")
    body_timeout_s: float = Field(30.0, gt=0.0, description="a request body not received whole "
                                  "within this is refused (408): a client that drips bytes holds "
                                  "no connection for ever")
    max_connections: int = Field(1024, ge=1, description="connections served at once; more get 503")
    reload_poll_s: float = Field(0.5, gt=0.0, description="how often the registry is checked "
                                 "for a new champion (hot reload)")
    passes: int = Field(2, ge=1, le=64, description="forward passes computing at once, each on "
                        "a batch of queued requests (one computes while the next gathers)")
    threads: int = Field(0, ge=0, description="onnxruntime threads per forward pass; 0: the cores "
                         "shared among the passes")
    feedback_batch: int = Field(200, ge=1, description="labelled inputs (POST /feedback) that make "
                                "one batch in the feedback folder, for `evergreen watch` to ingest")
    feedback_folder: str = Field("drops", min_length=1, description="where feedback batches are "
                                 "dropped, relative to the workspace (run `evergreen watch` on it)")
    keep_served: int = Field(10_000, ge=1, description="served inputs kept for feedback; older "
                             "ones rotate out")
    keep_served_mb: int = Field(256, ge=1, description="and at most this many MB of their pixels "
                                "(the oldest rotate out first)")
    drift_window: int = Field(500, ge=40, description="served inputs per drift test (tumbling "
                              "windows), against validate.max_pixel_psi and "
                              "min_label_shift_pvalue")
    drift_reference: int = Field(2000, ge=100, description="test images the champion predicts "
                                 "once, for the predicted-class reference")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("not an IANA zone name (e.g. UTC, Europe/Paris)") from None
        return value
