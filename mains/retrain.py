"""Continual retraining's workspace side: what is new since the champion, the screen of each
new batch (drift, then label noise against the champion), and the plan for training."""

from __future__ import annotations

import logging
from pathlib import Path

from evergreen import dvcfile
from evergreen.config import Config, ValidateConfig, params_hash
from evergreen.errors import EvergreenError
from evergreen.workspace import Workspace, read_json
from mains.ingest import quarantine_batch
from mains.versions import load_registry

log = logging.getLogger("evergreen.flow")
TRIGGER = "continual-retraining"


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


def retrain_plan(ws: Workspace, cfg: Config) -> dict:
    """The champion, its data, and the batches landed since (empty: nothing to do)."""
    from tasks.promote import champion_entry
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


def judged_already(ws: Workspace, cfg: Config) -> str | None:
    """After a quarantine: the rejected retrain that already judged the data that is left."""
    repeat = repeated_attempt(load_registry(ws.registry), dvcfile.data_version(ws.root),
                              params_hash(cfg.to_params()))
    return repeat and repeat["version"]


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


def screen_batches(ws: Workspace, cfg: Config, plan: dict) -> dict:
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


def drift_check(ws: Workspace, validate: ValidateConfig, batch_id: str,
                reference) -> tuple[list[str], list[str]]:
    """The ingest drift and per-sample checks of one batch against the champion's data:
    (failures, drift warnings); a shift only warns under validate.on_drift: warn."""
    from tasks.retrain import read_batch
    from tasks.validate import validate_batch, write_report

    _, _, meta = read_batch(ws.batches, batch_id)
    report = validate_batch(meta, reference, validate, 0)
    write_report(report, ws.reports / "retrain" / f"{batch_id}.json")
    return ([] if report.success else list(report.failures)), list(report.warnings)


def screen_batch(ws: Workspace, cfg: Config, plan: dict, batch_id: str, champion, reference) -> dict:
    """Drift checks, then the champion's accuracy on the batch (label noise): a drifted batch
    is still screened, so wrong labels are told from a new population by the champion."""
    from tasks.retrain import predicted_names, read_batch, score_label_noise

    failures, drift = drift_check(ws, cfg.validate_, batch_id, reference)
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


