"""promote's main: judge the candidate against the gates, store it as a version, record it in
the registry and move the champion when it passes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from evergreen.config import EvaluateConfig, PreprocessConfig, PromoteConfig
from evergreen.workspace import Workspace, git_commit, read_json
from mains.processed import load_split, read_meta
from mains.versions import record_candidate, store_version
from tasks.promote import CandidateEntry, Judgement, now, summary_row

log = logging.getLogger("evergreen.stages")


def run_promote(ws: Workspace, section: PromoteConfig, evaluate: EvaluateConfig,
                preprocess: PreprocessConfig, run_id: str, data_version: str | None,
                full_params_hash: str, extra: dict | None = None) -> dict:
    """Gate the candidate against thresholds, the null model and the champion; record it.

    `extra` joins the registry entry (the retraining flow records its batches there).
    """
    from nets.io import file_sha256, model_file
    from tasks.promote import judged_role

    metrics = read_json(ws.reports / "metrics.json")
    role, stood_in = judged_role(metrics, section.candidate, section)
    if stood_in:
        log.info("promote: the teacher stands in for %s, which failed: %s "
                 "(compress.select.fallback: teacher)", stood_in["variant"],
                 "; ".join(stood_in["failed"]))
    model_dir = ws.model_dir(role)
    entry = CandidateEntry(run_id, describe_candidate(ws, role, metrics), data_version,
                           full_params_hash, git_commit(ws.root), now(), None,
                           {"lineage": data_lineage(ws, preprocess), **(extra or {}),
                            **({"stands_in_for": stood_in} if stood_in else {})})

    def judge(registry: dict) -> Judgement:
        return judge_candidate(ws, registry, metrics, role, section, evaluate, run_id)

    def store(registry: dict) -> str:
        teacher = ws.model_dir("teacher") if role != "teacher" else None
        return store_version(registry, model_dir, ws.versions, sha, teacher,
                             export=teacher_export(ws, sha) if role == "teacher" else None)

    sha = file_sha256(model_file(model_dir))
    return record_candidate(ws.registry, entry, sha, "champion", judge, store)


def teacher_export(ws: Workspace, sha: str) -> Path | None:
    """The teacher's ONNX export from compress (models/variants/teacher), when it was made from
    these very weights: a promoted teacher is then served by onnxruntime like any variant."""
    from nets.io import ONNX, file_sha256

    exported = ws.models / "variants" / "teacher"
    if (exported / ONNX).exists() and file_sha256(exported / "model.safetensors") == sha:
        return exported / ONNX
    return None


def describe_candidate(ws: Workspace, role: str, metrics: dict) -> dict:
    """What the registry says of the candidate: its role, arch, compression and metrics, and how
    its teacher was trained (processes; what the data decided where params say auto)."""
    from nets.io import read_card

    teacher = read_card(ws.model_dir("teacher"))
    return {"role": role, "arch": metrics[role]["arch"],
            "compression": metrics[role].get("method", "none"),
            "variant": metrics[role].get("variant"),
            "metrics": {**summary_row(metrics[role]),
                        "per_class_recall": metrics[role]["per_class_recall"],
                        "null_accuracy": metrics["null_model"]["accuracy"],
                        "teacher_accuracy": metrics["teacher"]["accuracy"]},
            # processes that trained the teacher (its card; 1 for cards from before DDP)
            "train_world_size": teacher.get("training", {}).get("world_size", 1),
            "auto": teacher.get("auto")}


def judge_candidate(ws: Workspace, registry: dict, all_metrics: dict, role: str,
                    section: PromoteConfig, evaluate: EvaluateConfig, run_id: str) -> Judgement:
    """The gates: thresholds, the null model (a variant the teacher may stand in for, after its
    teacher) and, with a champion,
    the champion/challenger ones from one side-by-side run of both models as served; a
    selection over budget is blocked."""
    from tasks.promote import challenger_gates, run_gates, teacher_first, verdict_line

    metrics = all_metrics[role]
    comparison = (challenger_comparison(ws, registry, role, section.mcnemar_alpha, evaluate)
                  if registry["champion"] else None)
    champ_acc = champion_accuracy(ws, registry, comparison)
    gates = run_gates(metrics, champ_acc, section, comparison["latency"] if comparison else None,
                      teacher_first(all_metrics, role))
    gates += challenger_gates(comparison, section) if comparison else []
    # a selection that found no variant within the compression budget is not promoted
    over_budget = [] if metrics.get("fits_budget", True) else [metrics["selection"]]
    return Judgement(gates, over_budget, promotion_reason(run_id, comparison),
                     {"why_not": verdict_line(gates, over_budget),
                      "champion_accuracy_on_current_test": champ_acc, "comparison": comparison})


def champion_accuracy(ws: Workspace, registry: dict, comparison: dict | None) -> float | None:
    """The champion's accuracy on the current test split, from the side-by-side comparison
    (None without a champion, or one with other classes or input shape)."""
    from nets.io import read_card

    if comparison is None:
        return None
    card = read_card(ws.root / registry["versions"][registry["champion"]]["path"])
    if card["classes"] != read_meta(ws)["classes"]:
        log.warning("champion %s has other classes or input shape; no champion comparison",
                    registry["champion"])
        return None
    return comparison["current_test"]["champion_accuracy"]


def challenger_comparison(ws: Workspace, registry: dict, candidate: str, alpha: float,
                          evaluate: EvaluateConfig) -> dict | None:
    """Champion and candidate, as served, on the current test split and the champion's old one."""
    from tasks.retrain import compare_to_champion

    test = load_split(ws, "test")
    classes = np.asarray(read_meta(ws)["classes"])
    champion_dir = ws.root / registry["versions"][registry["champion"]]["path"]
    return compare_to_champion(champion_dir, ws.model_dir(candidate), candidate == "selected",
                               (test[0], classes[test[1]]), champion_old_test(ws, registry),
                               alpha, evaluate)


def data_lineage(ws: Workspace, preprocess: PreprocessConfig) -> dict:
    """The batches that make this data version, the split params that place its samples, and
    the batches that landed with a drift warning (each with its lines)."""
    from tasks.retrain import landed_batches

    batches = landed_batches(ws.batches)
    return {"batches": batches, "preprocess": preprocess.model_dump(),
            "drift": drifted_batches(ws, batches)}


def drifted_batches(ws: Workspace, batch_ids: list[str]) -> dict[str, list[str]]:
    """The drift warnings each batch's ingest report recorded (batches without any left out)."""
    drifted = {}
    for batch_id in batch_ids:
        try:
            warnings = read_json(ws.reports / "ingest" / f"{batch_id}.json").get("warnings")
        except (OSError, ValueError, AttributeError):  # no report (landed directly) or unreadable
            continue
        if warnings:
            drifted[batch_id] = list(warnings)
    return drifted


def champion_old_test(ws: Workspace, registry: dict) -> tuple | None:
    """The champion's own test split, rebuilt from its batches (None if it recorded none)."""
    from tasks.promote import champion_entry
    from tasks.retrain import split_of_batches

    lineage = (champion_entry(registry) or {}).get("lineage")
    if not lineage:
        return None
    # a lineage from before group splits was split sample by sample
    split_params = {"group_split": "off", **lineage["preprocess"]}
    return split_of_batches(ws.batches, lineage["batches"],
                            PreprocessConfig.model_validate(split_params))


def promotion_reason(run_id: str, comparison: dict | None) -> str:
    """Why the champion moves: the gates, and whether McNemar calls it an improvement."""
    reason = f"passed all gates in run {run_id}"
    if comparison:
        cur = comparison["current_test"]
        verdict = "a significant improvement" if cur["improvement"] else "no significant difference"
        reason += (f"; McNemar on the current test split: {verdict} "
                   f"(p={cur['mcnemar']['pvalue']:.3g}, accuracy {cur['champion_accuracy']:.4f} "
                   f"-> {cur['challenger_accuracy']:.4f})")
    return reason
