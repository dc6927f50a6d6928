"""`evergreen serve`: the workspace's deployments, served from this process.

- `training-pipeline` runs on `serve.training_cron`;
- `continual-retraining` runs when `evergreen watch` reports a landed batch (a
  DeploymentEventTrigger on `evergreen.batch.ingested` for this workspace), and on
  `serve.retrain_cron` if set.

The deployed flows hold the workspace lock while they run (waiting up to
`serve.lock_wait_seconds`), and the runner takes one run at a time, so two runs never
overlap and a trigger that fires during a run waits for it. prefect.yaml describes the
same deployments for a work pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from prefect import flow

from app.watch import EVENT, resource_id
from evergreen.config import ServeConfig, load_config
from evergreen.errors import BadInputError, ConfigError, EvergreenError
from evergreen.workspace import Workspace, workspace_lock

log = logging.getLogger("evergreen.serve")
TAGS = ["evergreen"]


SERVED_ENV = "EVERGREEN_SERVED_WORKSPACE"  # set by `evergreen serve` for the runs it starts


def check_parameters(workspace: str, data: str | None) -> None:
    """A flow run `evergreen serve` starts acts on the workspace it serves, whatever its
    parameters say: anyone who can reach the server can set them, so `workspace` must be the
    served one and `data`, if set, a path inside it (a drop folder, a landed batch)."""
    served = os.environ.get(SERVED_ENV)
    if not served:
        return  # not started by `evergreen serve` (a test, or a flow called directly)
    root = Path(served).resolve()
    if Path(workspace).resolve() != root:
        raise BadInputError(f"deployment parameter workspace={workspace!r}: this `evergreen serve` "
                            f"serves {root} and runs nothing elsewhere; refused")
    if data is not None and not (root / data).resolve().is_relative_to(root):
        raise BadInputError(f"deployment parameter data={data!r}: outside the served workspace "
                            f"{root}; refused (ingest other sources with `evergreen ingest`)")


@contextlib.contextmanager
def held(workspace: str, command: str, data: str | None = None, overrides: list[str] | None = None):
    """The workspace lock, waiting as long as params.yaml's serve.lock_wait_seconds, once the
    parameters are checked against the served workspace."""
    check_parameters(workspace, data)
    ws = Workspace(Path(workspace))
    with workspace_lock(ws, command, load_config(ws.params, overrides).serve.lock_wait_seconds):
        yield


@flow(name="training-pipeline")
def deployed_training(workspace: str, data: str | None = None,
                      overrides: list[str] | None = None) -> dict:
    """training-pipeline as its deployment runs it: holding the workspace lock."""
    from flows.training import training_pipeline

    with held(workspace, "training-pipeline deployment", data, overrides):
        return training_pipeline.fn(workspace, data=data, overrides=overrides)


@flow(name="continual-retraining")
def deployed_retraining(workspace: str, overrides: list[str] | None = None) -> dict:
    """continual-retraining as its deployment runs it: holding the workspace lock."""
    from flows.retraining import continual_retraining

    with held(workspace, "continual-retraining deployment", overrides=overrides):
        return continual_retraining.fn(workspace, overrides=overrides)


def cron_schedules(expr: str | None, timezone: str, key: str) -> list:
    """[Cron(expr)] checked by Prefect's own parser, or [] when unset."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron
    from pydantic import ValidationError

    if expr is None:
        return []
    try:
        CronSchedule(cron=expr, timezone=timezone)
    except ValidationError:
        raise ConfigError(f"params.yaml: {key}: {expr!r} is not a cron expression "
                          "(five fields: minute hour day-of-month month day-of-week)") from None
    return [Cron(expr, timezone=timezone)]


def retrain_trigger(ws: Workspace, params: dict):
    """Run continual-retraining for this workspace on each batch `evergreen watch` lands."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"continual-retraining on {EVENT} ({ws.root.name})", expect={EVENT},
        match={"prefect.resource.id": resource_id(ws)}, parameters=params)


def build_deployments(ws: Workspace, cfg: ServeConfig, overrides: list[str] | None = None) -> list:
    """The two RunnerDeployments `evergreen serve` serves for this workspace (its --set in each run)."""
    params = {"workspace": str(ws.root), **({"overrides": list(overrides)} if overrides else {})}
    training = deployed_training.to_deployment(
        name="training-pipeline", parameters=params, tags=TAGS,
        schedules=cron_schedules(cfg.training_cron, cfg.timezone, "serve.training_cron"),
        description=f"The full pipeline on {ws.root}, on a schedule.")
    retraining = deployed_retraining.to_deployment(
        name="continual-retraining", parameters=params, tags=TAGS, triggers=[retrain_trigger(ws, params)],
        schedules=cron_schedules(cfg.retrain_cron, cfg.timezone, "serve.retrain_cron"),
        description=f"Retrain {ws.root} on newly ingested batches (event {EVENT}).")
    return [training, retraining]


def check_server() -> str:
    """PREFECT_API_URL, checked to answer; a clear error when unset or down."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise BadInputError("serve needs a Prefect server and PREFECT_API_URL is not set: start one "
                            "with `evergreen ui` and export the PREFECT_API_URL it prints")
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise EvergreenError(f"PREFECT_API_URL={url} does not answer ({problem}); is the server "
                             "running (`evergreen ui`)?")
    return url


def serve_workspace(ws: Workspace, overrides: list[str] | None = None, api: bool = False) -> None:
    """Register the deployments and run them as they come due, one at a time, until Ctrl-C;
    with `api`, `evergreen api` serves the champion beside them (it reloads what they promote)."""
    from prefect import serve

    full = load_config(ws.params, overrides)  # a bad --set is refused before the server check
    cfg = full.serve
    url = check_server()
    deployments = build_deployments(ws, cfg, overrides)
    os.environ[SERVED_ENV] = str(ws.root.resolve())  # the runs it starts check against it
    if api:
        start_api(ws, full)
    log.info("serving %s for %s on %s", ", ".join(d.name for d in deployments), ws.root, url)
    serve(*deployments, limit=1)


def start_api(ws: Workspace, cfg) -> None:
    """`evergreen api` in a daemon thread of this process, on serve.host and serve.port."""
    import threading

    import uvicorn

    from app.api import create_app, server_config

    server = uvicorn.Server(server_config(create_app(ws, cfg), cfg.serve, cfg.serve.host,
                                          cfg.serve.port))
    # uvicorn captures signals only in the main thread: the runner keeps Ctrl-C and SIGTERM
    threading.Thread(target=server.run, name="evergreen-api", daemon=True).start()
    log.info("evergreen api on http://%s:%d beside the deployments", cfg.serve.host, cfg.serve.port)
