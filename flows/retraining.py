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
import time
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from evergreen.config import Config, load_config, params_hash
from evergreen.errors import DataValidationError, EvergreenError
from evergreen.stages import pure_names
from evergreen.workspace import Workspace, read_json
from flows import dvcfile
from flows.artifacts import publish_retraining, publish_run_artifacts
from flows.stages import checkpoint_for, load_split, quarantine_batch, write_csv
from flows.training import (
    promote_task,
    run_stage,
    run_stage_loop,
    task_options,
    train_task,
)

log = logging.getLogger("evergreen.flow")
TRIGGER = "continual-retraining"


# --- what is new ------------------------------------------------------------------------

def champion_lineage(ws: Workspace, registry: dict, cfg: Config) -> dict:
    """The champion's batches and split params: recorded at promotion, else DVC's listing."""
    from tasks.promote import champion_entry
    from tasks.retrain import batches_of_version

    entry = champion_entry(registry) or {}
    if entry.get("lineage"):
        return entry["lineage"]
    batches = batches_of_version(ws.root, entry.get("data_version"))
    if batches is None:
        raise EvergreenError(f"{ws.registry}: champion {registry['champion']} records no batch "
                             "list and its data version is not in the DVC cache; promote a model "
                             "trained by `evergreen run` first")
    return {"batches": batches, "preprocess": cfg.preprocess.model_dump()}


def repeated_attempt(registry: dict, data_version: str | None, params_h: str) -> dict | None:
    """The last retrain, if it already judged this data with these params against this champion."""
    last = next((c for c in reversed(registry["candidates"]) if c.get("trigger") == TRIGGER), None)
    if last and last["verdict"] == "rejected" and last["data_version"] == data_version \
            and last["params_hash"] == params_h and last["champion_before"] == registry["champion"]:
        return last
    return None


def judged_already(ws: Workspace, cfg: Config) -> str | None:
    """After a quarantine: the rejected retrain that already judged the data that is left."""
    from tasks.promote import load_registry

    repeat = repeated_attempt(load_registry(ws.registry), dvcfile.data_version(ws.root),
                              params_hash(cfg.to_params()))
    return repeat and repeat["version"]


def retrain_plan(ws: Workspace, cfg: Config) -> dict:
    """The champion, its data, and the batches landed since (empty: nothing to do)."""
    from tasks.promote import champion_entry, load_registry
    from tasks.retrain import landed_batches, new_batches

    registry = load_registry(ws.registry)
    champion = registry["champion"]
    if champion is None:
        raise EvergreenError(f"{ws.registry}: no champion yet; run `evergreen run` first "
                             "(a retrain starts from the champion)")
    lineage = champion_lineage(ws, registry, cfg)
    new = new_batches(landed_batches(ws.batches), lineage["batches"])
    entry = champion_entry(registry) or {}
    repeat = repeated_attempt(registry, dvcfile.data_version(ws.root), params_hash(cfg.to_params()))
    return {"champion": champion, "path": registry["versions"][champion]["path"],
            "test_accuracy": entry.get("metrics", {}).get("accuracy"), "lineage": lineage,
            "new": new, "repeat_of": repeat and repeat["version"]}


def nothing_new(plan: dict) -> dict:
    if plan["repeat_of"]:
        message = (f"nothing new since the last retrain: candidate {plan['repeat_of']} was "
                   f"rejected on this same data and params; champion {plan['champion']} kept, "
                   "nothing trained")
    else:
        message = (f"nothing new: no batch landed since champion {plan['champion']}'s data "
                   f"({len(plan['lineage']['batches'])} batches); nothing trained")
    return {"status": "nothing-new", "message": message, "champion": plan["champion"],
            "batches": {"new": [], "usable": [], "quarantined": []}}


# --- screening each new batch -----------------------------------------------------------

def drift_check(ws: Workspace, cfg: Config, batch_id: str, reference) -> tuple[list[str], list[str]]:
    """The ingest drift and per-sample checks of one batch against the champion's data:
    (failures, drift warnings); a shift only warns under validate.on_drift: warn."""
    from tasks.retrain import read_batch
    from tasks.validate import validate_batch, write_report

    _, _, meta = read_batch(ws.batches, batch_id)
    report = validate_batch(meta, reference, cfg.validate_, 0)
    write_report(report, ws.reports / "retrain" / f"{batch_id}.json")
    return ([] if report.success else list(report.failures)), list(report.warnings)


def screen_batch(ws: Workspace, cfg: Config, plan: dict, batch_id: str, champion, reference) -> dict:
    """Drift checks, then the champion's accuracy on the batch (label noise): a drifted batch
    is still screened, so wrong labels are told from a new population by the champion."""
    from tasks.retrain import predicted_names, read_batch, score_label_noise

    failures, drift = drift_check(ws, cfg, batch_id, reference)
    row = {"batch_id": batch_id, "reasons": failures, "noise": None, "drift": drift}
    for line in drift:
        log.warning("batch %s drifted from champion %s's data (kept for the label-noise screen, "
                    "validate.on_drift is warn): %s", batch_id, plan["champion"], line)
    if failures or plan["test_accuracy"] is None:
        return row
    model, card = champion
    x, labels, _ = read_batch(ws.batches, batch_id)
    score = score_label_noise(batch_id, predicted_names(model, card, x), labels, card["classes"],
                              plan["test_accuracy"], cfg.retrain)
    row["noise"] = {"scored": score.scored, "accuracy": score.accuracy,
                    "champion_test_accuracy": score.reference, "max_drop": score.threshold}
    if score.suspect:
        row["reasons"] = [score.reason()]
    elif score.accuracy is None:
        log.info("%s", score.reason())
    return row


@task(name="screen-batches", cache_policy=NO_CACHE)
def screen_task(ws: Workspace, cfg: Config, plan: dict) -> dict:
    """Check each new batch against the champion's data and model; quarantine the bad ones."""
    from nets.io import load_model
    from tasks.ingest import read_metadata

    meta = read_metadata(ws.batches)
    reference = meta[meta["batch_id"].isin(plan["lineage"]["batches"])].reset_index(drop=True)
    champion = load_model(ws.root / plan["path"], prefer_onnx=True)
    rows = [screen_batch(ws, cfg, plan, b, champion, reference) for b in plan["new"]]
    bad = [r for r in rows if r["reasons"]]
    for row in bad:
        row["where"] = quarantine_batch(ws, row["batch_id"], "\n".join(row["reasons"]))
        log.warning("quarantined batch %s: %s", row["batch_id"], "; ".join(row["reasons"]))
    if bad:
        dvcfile.track(ws.root, "data/batches")
    return {"new": plan["new"], "usable": [r["batch_id"] for r in rows if not r["reasons"]],
            "quarantined": bad, "screened": rows}


# --- training ---------------------------------------------------------------------------

def champion_teacher(ws: Workspace, plan: dict) -> Path | None:
    """The teacher weights behind the champion: its own, or those it was compressed from."""
    from nets.io import read_card

    version = ws.root / plan["path"]
    if (version / "teacher" / "model.safetensors").exists():
        return version / "teacher"
    plain = read_card(version).get("compression", {}).get("method", "none") == "none"
    return version if plain and (version / "model.safetensors").exists() else None


def training_plan(ws: Workspace, cfg: Config, plan: dict) -> dict:
    """Warm start or full training, and why."""
    from nets.io import read_card
    from tasks.retrain import warm_start_plan

    teacher = champion_teacher(ws, plan)
    meta = read_json(ws.processed / "meta.json")
    warm, why = warm_start_plan(cfg.retrain, cfg.train, read_card(teacher) if teacher else None,
                                meta["classes"], tuple(meta["in_shape"]))
    return {"mode": "warm" if warm else "full", "why": why,
            "teacher": str(teacher) if warm else None}


def new_sample_mask(ws: Workspace, x: np.ndarray, batch_ids: list[str]) -> np.ndarray:
    """Which samples of `x` come from the given batches (by content hash)."""
    from tasks.ingest import content_hash, read_metadata

    meta = read_metadata(ws.batches)
    fresh = set(meta.loc[meta["batch_id"].isin(batch_ids), "content_hash"])
    return np.array([content_hash(img) in fresh for img in x], dtype=bool)


def run_warm_train(ws: Workspace, cfg: Config, teacher_dir: Path, batch_ids: list[str],
                   source: str) -> dict:
    """Fine-tune the champion's teacher on the new train samples plus a replay of old ones."""
    from nets.io import file_sha256, load_model, save_model
    from tasks.report import plot_history
    from tasks.retrain import replay_mix, warm_start_fit

    teacher, card = load_model(teacher_dir)
    train, val = load_split(ws, "train"), load_split(ws, "val")
    mixed, mix = replay_mix(train, new_sample_mask(ws, train[0], batch_ids),
                            cfg.retrain.replay_ratio, cfg.train.seed)
    ckpt, key = checkpoint_for(ws, "retrain", params_hash(cfg.retrain), params_hash(cfg.train),
                               file_sha256(teacher_dir / "model.safetensors"))
    start = time.perf_counter()
    model, history = warm_start_fit(teacher, card, mixed, val, cfg.train, cfg.retrain, ckpt, key)
    seconds = time.perf_counter() - start
    card = {**card, "training": {"world_size": 1, "warm_start": {
        "from": source, "epochs": cfg.retrain.epochs, "lr": cfg.retrain.lr, **mix}}}
    save_model(model, card, ws.model_dir("teacher"))
    write_csv(ws.reports / "plots" / "train.csv", history)
    plot_history(history, ws.reports / "figures" / "train_curves.png",
                 f"teacher ({card['arch']}, warm start from {source})")
    ckpt.unlink(missing_ok=True)
    return {"epochs_run": len(history), "val_acc": history[-1]["val_acc"] if history else None,
            "seconds": round(seconds, 2), **mix}


@task(**task_options("train"))
def warm_train_task(ws: Workspace, cfg: Config, training: dict, batch_ids: list[str],
                    source: str, commit: bool) -> dict:
    """Warm-start the teacher (dvc.lock then records the fine-tuned teacher as train's output)."""
    summary = run_warm_train(ws, cfg, Path(training["teacher"]), batch_ids, source)
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
    ws, overrides = Workspace(Path(workspace)), list(overrides or [])
    dvcfile.init_workspace(ws)
    cfg = load_config(ws.params, overrides)
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


# --- benchmark --------------------------------------------------------------------------

def measure_warm_vs_scratch(workspace: str, overrides: list[str] | None = None) -> dict:
    """For `evergreen bench`: on a workspace with a champion and new batches landed since,
    build the new dataset, then time a warm start and a from-scratch training to the
    champion teacher's val accuracy, and the warm model's drop on the old test split.

    Changes data/processed (the new dataset version); trains nothing into models/.
    """
    from flows.stages import champion_old_test
    from nets.io import load_model
    from tasks.promote import load_registry
    from tasks.retrain import warm_vs_scratch

    ws = Workspace(Path(workspace))
    cfg = load_config(ws.params, overrides)
    plan = retrain_plan(ws, cfg)
    if not plan["new"]:
        raise EvergreenError(f"{ws.root}: no batch landed since champion {plan['champion']}; "
                             "ingest one first")
    for stage in ("validate", "preprocess"):
        run_stage(stage, ws, cfg, rerun=False, commit=False)
    teacher_dir = champion_teacher(ws, plan)
    if teacher_dir is None:
        raise EvergreenError(f"champion {plan['champion']} kept no teacher weights to warm-start")
    teacher, card = load_model(teacher_dir)
    train = load_split(ws, "train")
    old = champion_old_test(ws, load_registry(ws.registry))
    return warm_vs_scratch(teacher, card, train, new_sample_mask(ws, train[0], plan["new"]),
                           load_split(ws, "val"), old, cfg.train, cfg.retrain)
