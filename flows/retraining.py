"""The `continual-retraining` flow: the batches landed since the champion's data, screened,
then the training pipeline's stages with a warm start, and the champion/challenger gate.

new batches -> drift + label-noise screen (quarantine) -> validate -> preprocess ->
train (warm start from the champion's teacher with replay, or from scratch) -> compress ->
evaluate -> promote.

Warm start: the teacher architecture is always what is fine-tuned: the champion's own
weights when it is an uncompressed teacher, otherwise the teacher it was compressed from
(stored with its version); compress then rebuilds the variants from the new teacher.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from evergreen import dvcfile
from evergreen.config import Config, load_config
from evergreen.errors import DataValidationError
from evergreen.stages import pure_names
from evergreen.workspace import Workspace
from flows.artifacts import publish_retraining, publish_run_artifacts
from flows.training import (
    promote_task,
    run_stage,
    run_stage_loop,
    start_run,
    task_options,
    train_task,
)
from mains.ingest import quarantine_batch
from mains.retrain import (
    TRIGGER,
    judged_already,
    nothing_new,
    retrain_plan,
    screen_batches,
    training_plan,
)
from mains.train import run_warm_train

log = logging.getLogger("evergreen.flow")


@task(name="screen-batches", cache_policy=NO_CACHE)
def screen_task(ws: Workspace, cfg: Config, plan: dict) -> dict:
    """Check each new batch against the champion's data and model; quarantine the bad ones."""
    return screen_batches(ws, cfg, plan)


# --- training ---------------------------------------------------------------------------

@task(**task_options("train"))
def warm_train_task(ws: Workspace, cfg: Config, training: dict, batch_ids: list[str],
                    source: str, commit: bool) -> dict:
    """Warm-start the teacher (dvc.lock then records the fine-tuned teacher as train's output)."""
    summary = run_warm_train(ws, cfg.train, cfg.retrain, Path(training["teacher"]), batch_ids, source)
    if commit:
        dvcfile.commit_stage(ws.root, "train")
    log.info("train: warm start from %s, %d epochs on %d new + %d replayed samples, %.1f s",
             source, summary["epochs_run"], summary["new_samples"], summary["replay_samples"],
             summary["seconds"])
    return {"ran": True, "mode": "warm", **summary}


def reject_new_data(ws: Workspace, batch_ids: list[str]):
    """on_invalid for retraining: the dataset with the new batches fails validation, so they
    are quarantined and the report restored."""
    def reject(exc: DataValidationError) -> None:
        for batch_id in batch_ids:
            quarantine_batch(ws, batch_id, f"the dataset with this batch failed validation:\n{exc}")
        dvcfile.track(ws.root, "data/batches")
        run_stage("validate", ws, load_config(ws.params), rerun=False, commit=True)
        raise DataValidationError(f"{exc}\nnew batches {', '.join(batch_ids)} quarantined; the "
                                  "dataset and the champion are as they were") from None

    return reject


def run_pipeline(ws: Workspace, cfg: Config, overrides: list[str], plan: dict,
                 usable: list[str]) -> tuple[dict, dict]:
    """validate -> preprocess -> train (warm or full) -> compress -> evaluate."""
    decided = {}

    def train(rerun: bool, commit: bool) -> dict:  # decided once preprocess has run
        decided.update(training_plan(ws, cfg, plan))
        log.info("train: %s", decided["why"])
        if decided["mode"] == "warm":
            return warm_train_task(ws, cfg, decided, usable, plan["champion"], commit)
        return {**train_task(ws, cfg, True, commit), "mode": "full"}

    stages = run_stage_loop(ws, cfg, overrides, pure_names(), reject_new_data(ws, usable),
                            instead={"train": train})
    return stages, decided or None


# --- the flow ---------------------------------------------------------------------------

@flow(name="continual-retraining")
def continual_retraining(workspace: str, overrides: list[str] | None = None) -> dict:
    """Retrain on the batches landed since the champion's data; gate the challenger."""
    ws, overrides, cfg = start_run(workspace, overrides)
    plan = retrain_plan(ws, cfg)
    if not plan["new"] or plan["repeat_of"]:
        result = nothing_new(plan)
        log.info("%s", result["message"])
        publish_retraining(result)
        return result
    batches = screen_task(ws, cfg, plan)
    if not batches["usable"]:
        result = {"status": "quarantined", "champion": plan["champion"], "batches": batches,
                  "message": f"nothing usable: all {len(plan['new'])} new batches were "
                             f"quarantined; champion {plan['champion']} unchanged"}
        publish_retraining(result)
        reasons = "\n  ".join(f"{r['batch_id']}: {'; '.join(r['reasons'])} (in {r['where']})"
                              for r in batches["quarantined"])
        raise DataValidationError(f"retrain: {result['message']}:\n  {reasons}")
    if batches["quarantined"] and judged_already(ws, cfg):
        result = {**nothing_new({**plan, "repeat_of": judged_already(ws, cfg)}), "batches": batches}
        publish_retraining(result)
        return result
    stages, training = run_pipeline(ws, cfg, overrides, plan, batches["usable"])
    extra = {"trigger": TRIGGER, "retrain": {
        "champion": plan["champion"], "new_batches": batches["usable"],
        "quarantined": [r["batch_id"] for r in batches["quarantined"]],
        # usable batches that drifted from the champion's data: learnt from, gated as any other
        "drifted": {r["batch_id"]: r["drift"] for r in batches["screened"]
                    if r["drift"] and not r["reasons"]},
        "training": training["mode"], "why": training["why"]}}
    outcome = promote_task(ws, cfg, dvcfile.data_version(ws.root), extra)
    result = {"status": "retrained", "champion": plan["champion"], "batches": batches,
              "training": training, "stages": stages, "promote": outcome,
              "message": f"candidate {outcome['version']}: {outcome['verdict']}"}
    publish_run_artifacts(ws, outcome, stages)
    publish_retraining(result)
    return result


