"""The `training-pipeline` flow: thin Prefect tasks around the stage mains, in order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from evergreen import dvcfile
from evergreen.config import Config, load_config, params_hash
from evergreen.errors import DataValidationError, EvergreenError
from evergreen.stages import pure_names, stage
from evergreen.workspace import Workspace
from flows.artifacts import (
    TrainingProgress,
    publish_batch_drift,
    publish_run_artifacts,
    publish_validation,
)
from mains import call_main
from mains.ingest import quarantine_batch

log = logging.getLogger("evergreen.flow")


def transient(task, task_run, state) -> bool:
    """Retry I/O hiccups and crashed training, never a user error (bad data would fail again
    the same way)."""
    try:
        state.result()
    except EvergreenError as exc:
        return exc.transient
    except Exception:
        return True
    return False


def task_options(name: str) -> dict:
    """A stage's Prefect task options from the registry: its name, and retries (on errors that
    are not the user's) where it has any."""
    entry = stage(name)
    retry = {"retries": entry.retries, "retry_condition_fn": transient} if entry.retries else {}
    return {"name": entry.name, "cache_policy": NO_CACHE, **retry}


def run_stage(name: str, ws: Workspace, cfg: Config, rerun: bool, commit: bool,
              stale: set[str] | None = None, **hooks) -> dict:
    """Run a pure stage unless DVC says it is current; record it in dvc.lock when asked.

    `stale`: the stages DVC found changed at the start of the run (None: ask DVC now).
    """
    if not rerun and (name not in stale if stale is not None
                      else dvcfile.stage_is_current(ws.root, name)):
        log.info("%s: unchanged (data, params and outputs match dvc.lock), skipped", name)
        return {"ran": False}
    summary = call_main(name, ws, cfg, **hooks)
    if commit:
        dvcfile.commit_stage(ws.root, name)
    return {"ran": True, **summary}


@task(**task_options("ingest"))
def ingest_task(ws: Workspace, cfg: Config, source: str | None) -> dict:
    """Land new data as a batch and version it with DVC."""
    result = call_main("ingest", ws, cfg, source=source)
    if result["batch_id"]:
        dvcfile.track(ws.root, "data/batches")
    if result.get("drift"):
        publish_batch_drift(ws, result)
    return result


@task(**task_options("validate"))
def validate_task(ws: Workspace, cfg: Config, rerun: bool, commit: bool,
                  stale: set[str] | None = None) -> dict:
    """Great Expectations suite over the metadata table."""
    try:
        return run_stage("validate", ws, cfg, rerun, commit, stale)
    finally:  # a failed validation is the summary people most need to see
        publish_validation(ws)


@task(**task_options("preprocess"))
def preprocess_task(ws: Workspace, cfg: Config, rerun: bool, commit: bool,
                    stale: set[str] | None = None) -> dict:
    """Deduplicate, split by content hash, normalization stats."""
    return run_stage("preprocess", ws, cfg, rerun, commit, stale)


@task(**task_options("train"))
def train_task(ws: Workspace, cfg: Config, rerun: bool, commit: bool,
               stale: set[str] | None = None) -> dict:
    """Train the teacher (a retry resumes from the last epoch checkpoint)."""
    progress = TrainingProgress(cfg.train.epochs)
    summary = run_stage("train", ws, cfg, rerun, commit, stale, on_epoch=progress.update)
    progress.finish(summary)
    if summary["ran"]:
        log.info("train: world size %d, %.0f images/s (%.0f per process), %.1f s in all",
                 summary["world_size"], summary["images_per_s"],
                 summary["images_per_s_per_process"], summary["seconds"])
    return summary


@task(**task_options("compress"))
def compress_task(ws: Workspace, cfg: Config, rerun: bool, commit: bool,
                  stale: set[str] | None = None) -> dict:
    """Build, measure and select compressed variants of the teacher."""
    return run_stage("compress", ws, cfg, rerun, commit, stale)


@task(**task_options("evaluate"))
def evaluate_task(ws: Workspace, cfg: Config, rerun: bool, commit: bool,
                  stale: set[str] | None = None) -> dict:
    """Test metrics, latency, size, null model."""
    return run_stage("evaluate", ws, cfg, rerun, commit, stale)


@task(name="report", cache_policy=NO_CACHE)
def report_task(ws: Workspace, outcome: dict, stages: dict) -> None:
    """reports/run.html, and the run's summary, tables and links as artifacts."""
    publish_run_artifacts(ws, outcome, stages)


@task(**task_options("promote"))
def promote_task(ws: Workspace, cfg: Config, data_version: str | None,
                 extra: dict | None = None) -> dict:
    """Gate the candidate; record it in the registry; move the champion if it passes."""
    outcome = call_main("promote", ws, cfg, run_id=str(flow_run.id or "local"),
                        data_version=data_version, full_params_hash=params_hash(cfg.to_params()),
                        extra=extra)
    if outcome.pop("new_version"):
        dvcfile.track(ws.root, "models/versions")
    return outcome


STAGE_TASKS = {"validate": validate_task, "preprocess": preprocess_task, "train": train_task,
               "compress": compress_task, "evaluate": evaluate_task}
PIPELINE = [(name, STAGE_TASKS[name]) for name in pure_names()]  # the registry's order


def overridden_from(overrides: list[str]) -> int:
    """Index of the first pipeline stage whose params (its section, or what the registry says
    it reads) an override touches (len if none)."""
    keys = [o.split("=", 1)[0] for o in overrides]

    def touched(param: str) -> bool:
        return any(key == param or key.startswith(param + ".") or param.startswith(key + ".")
                   for key in keys)

    hits = [i for i, (name, _) in enumerate(PIPELINE) if any(map(touched, stage(name).params))]
    return min(hits, default=len(PIPELINE))


def run_stage_loop(ws: Workspace, cfg: Config, overrides: list[str], wanted: list[str],
                   on_invalid: Callable[[DataValidationError], None],
                   instead: dict[str, Callable[[bool, bool], dict]] | None = None) -> dict:
    """The `wanted` pure stages in the registry's order, each skipped when DVC finds it current;
    every flow runs its stages through here.

    A stage runs again when an earlier one ran, or when an override touches its params; those
    overridden params are for this run only, so from that stage on dvc.lock keeps params.yaml's.
    `instead[name](rerun, commit)` runs in place of a stage's task (retraining's warm start).
    A failed validation goes to `on_invalid`, which quarantines what it must and raises.
    """
    first_override, rerun, stages = overridden_from(overrides), False, {}
    stale = dvcfile.stale_stages(ws.root)  # once: until a stage runs, nothing it reads changes
    for i, (name, stage_task) in enumerate(PIPELINE):
        if name not in wanted:
            continue
        rerun, commit = rerun or i >= first_override, i < first_override
        try:
            stages[name] = (instead[name](rerun, commit) if name in (instead or {})
                            else stage_task(ws, cfg, rerun, commit=commit, stale=stale))
        except DataValidationError as exc:
            on_invalid(exc)
            raise
        rerun = rerun or stages[name]["ran"]
    return stages


def quarantine_landed(ws: Workspace, landed: dict) -> Callable[[DataValidationError], None]:
    """on_invalid for a run that landed a batch: the batch goes to quarantine, the dataset and
    its validation report are as they were, and the error says so (a run that landed nothing
    re-raises the error as it is)."""
    def quarantine(exc: DataValidationError) -> None:
        if not landed["batch_id"]:
            return
        where = quarantine_batch(ws, landed["batch_id"], str(exc))
        dvcfile.track(ws.root, "data/batches")
        if any(ws.batches.glob("*.csv")):  # the report again matches the data kept
            run_stage("validate", ws, load_config(ws.params), rerun=False, commit=True)
        raise DataValidationError(f"{exc}\nbatch {landed['batch_id']} quarantined in "
                                  f"{where}; the dataset is as it was") from None

    return quarantine


def run_pipeline_stages(ws: Workspace, cfg: Config, landed: dict, overrides: list[str],
                        wanted: list[str]) -> dict:
    """The `wanted` pure stages after an ingest; a batch that fails validation is quarantined."""
    return run_stage_loop(ws, cfg, overrides, wanted, quarantine_landed(ws, landed))


def start_run(workspace: str, overrides: list[str] | None) -> tuple[Workspace, list[str], Config]:
    """The workspace (git and DVC set up, default params.yaml where none) and its params with
    this run's overrides: how every flow starts."""
    ws, overrides = Workspace(Path(workspace)), list(overrides or [])
    dvcfile.init_workspace(ws)
    return ws, overrides, load_config(ws.params, overrides)


@flow(name="training-pipeline")
def training_pipeline(workspace: str, data: str | None = None,
                      overrides: list[str] | None = None) -> dict:
    """ingest -> validate -> preprocess -> train -> compress -> evaluate -> promote."""
    ws, overrides, cfg = start_run(workspace, overrides)
    landed = ingest_task(ws, cfg, data)
    stages = run_pipeline_stages(ws, cfg, landed, overrides, [name for name, _ in PIPELINE])
    outcome = promote_task(ws, cfg, dvcfile.data_version(ws.root))
    report_task(ws, outcome, stages)
    return {"ingest": landed, "stages": stages, "promote": outcome}
