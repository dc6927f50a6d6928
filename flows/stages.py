"""Stage mains: read inputs from the workspace, call the stage function, write outputs.

`evergreen stage NAME` (what dvc.yaml runs) and the Prefect tasks both call these, so
the pipeline logic exists once.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from evergreen.config import Config, params_hash
from evergreen.errors import BadInputError, DataValidationError
from evergreen.stages import load_main, pure_stages
from evergreen.workspace import Workspace, atomic_write_bytes, read_json, write_json

log = logging.getLogger("evergreen.stages")


def write_csv(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def run_validate(ws: Workspace, cfg: Config) -> dict:
    from tasks.ingest import read_metadata
    from tasks.validate import render_html, validate_metadata, write_report

    report = validate_metadata(read_metadata(ws.batches), cfg.validate_)
    write_report(report, ws.reports / "validation.json")
    atomic_write_bytes(ws.reports / "validation.html",
                       render_html(report, f"dataset validation: {ws.batches}").encode())
    if not report.success:
        failed = "\n  ".join(report.failures)
        raise DataValidationError(
            f"{ws.batches}: data validation failed ({len(report.failures)} expectations):\n  "
            f"{failed}\nfull result: {ws.reports / 'validation.json'}")
    return {"success": True, "samples": report.results.get("statistics", {})}


def save_processed(ws: Workspace, processed) -> None:
    out = ws.processed
    out.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in processed.splits.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, x=x, y=y)
        atomic_write_bytes(out / f"{name}.npz", buf.getvalue())
    write_json(out / "meta.json", {"classes": processed.classes, "mean": processed.mean,
                                   "std": processed.std, "in_shape": list(processed.in_shape),
                                   **processed.info})


def load_split(ws: Workspace, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(ws.processed / f"{name}.npz", allow_pickle=False) as npz:
        return npz["x"], npz["y"]


def run_preprocess(ws: Workspace, cfg: Config) -> dict:
    from tasks.ingest import read_batches
    from tasks.preprocess import preprocess

    processed = preprocess(*read_batches(ws.batches), cfg.preprocess)
    save_processed(ws, processed)
    return processed.info


def checkpoint_for(ws: Workspace, stage: str, *parts) -> tuple:
    """Where a stage keeps its epoch checkpoint, and the key a resume must match."""
    data = read_json(ws.processed / "meta.json")
    return ws.state / "checkpoints" / f"{stage}.pt", params_hash({"parts": [str(p) for p in parts],
                                                                  "data": data})


def run_train(ws: Workspace, cfg: Config, on_epoch=None) -> dict:
    from nets.io import save_model
    from tasks.report import plot_history
    from tasks.train import train_model

    meta = read_json(ws.processed / "meta.json")
    ckpt, key = checkpoint_for(ws, "train", params_hash(cfg.train))
    train = load_split(ws, "train")
    start = time.perf_counter()
    model, card, history = train_model(train, load_split(ws, "val"),
                                       meta["classes"], (meta["mean"], meta["std"]), cfg.train,
                                       checkpoint=ckpt, checkpoint_key=key, on_epoch=on_epoch)
    seconds = time.perf_counter() - start
    save_model(model, card, ws.model_dir("teacher"))
    write_csv(ws.reports / "plots" / "train.csv", history)
    plot_history(history, ws.reports / "figures" / "train_curves.png", f"teacher ({card['arch']})")
    ckpt.unlink(missing_ok=True)
    world = card.get("training", {}).get("world_size", 1)
    # end to end: launcher start-up and validation included; a resumed run counts all its epochs
    images_per_s = len(train[0]) * len(history) / seconds
    return {"epochs_run": len(history), "val_acc": history[-1]["val_acc"] if history else None,
            "world_size": world, "seconds": round(seconds, 2), "images_per_s": round(images_per_s, 1),
            "images_per_s_per_process": round(images_per_s / world, 1),
            "auto": card.get("auto")}


class VariantShelf:
    """The variants built so far, exported once to models/variants and measured side by side."""

    def __init__(self, out: Path, val, test, cfg: Config):
        import shutil

        self.out, self.val, self.test, self.select = out, val, test, cfg.compress.select
        self.variants, self.exports = {}, {}
        shutil.rmtree(out, ignore_errors=True)

    def add(self, variants: dict, check) -> None:
        from tasks.compress import save_variant

        for name, variant in variants.items():
            self.exports[name] = save_variant(variant, self.out / name, check)
        self.variants.update(variants)

    def rows(self) -> list[dict]:
        """Every variant's row, all timed again together (latency is only fair side by side)."""
        from tasks.compress import measure_variants

        measured = measure_variants(self.variants, self.out, self.val, self.test, self.select)
        return [{**measured[name], **self.exports[name]} for name in self.variants]


def run_compress(ws: Workspace, cfg: Config) -> dict:
    """Build, export and measure the variants round by round, mildest first, until one fits the
    budget (compress.build lazy); copy the selected one to models/selected."""
    from nets.io import file_sha256, load_model
    from tasks.compress import (
        Inputs,
        build_rounds,
        build_variants,
        building_stops,
        calibration_batch,
        distillation_gain,
        planned_names,
        pruned_name,
        resolve_prune,
        select_variant,
    )
    from tasks.pareto import plot_pareto

    teacher, card = load_model(ws.model_dir("teacher"))
    teacher_sha = file_sha256(ws.model_dir("teacher") / "model.safetensors")
    ckpt, key = checkpoint_for(ws, "compress", params_hash(cfg.compress), teacher_sha)
    train, val, test = (load_split(ws, name) for name in ("train", "val", "test"))
    ccfg, ratio_why = resolve_prune(cfg.compress, card)
    inputs = Inputs(teacher, card, train, val, ckpt.parent, key, ratio_why)
    shelf = VariantShelf(ws.models / "variants", val, test, cfg)
    check = calibration_batch(val, card, len(val[0]), 0)
    for ratio, why in ratio_why.items():
        log.info("compress: %s: %s", pruned_name(ratio), why)
    skipped, stopped = {}, None
    for kinds, round_cfg in build_rounds(ccfg):
        if stopped is not None:
            skipped.update((name, stopped) for name in sorted(planned_names(kinds, round_cfg)))
            continue
        variants, failed = build_variants(inputs, round_cfg, kinds)
        shelf.add(variants, check)
        skipped.update(failed)
        rows = shelf.rows()
        selected, reason = select_variant(rows, cfg.compress.select)
        stopped = building_stops(ccfg, rows, cfg.promote.candidate)
        if stopped is None:  # say why each round did not end the build, while it goes on
            log.info("compress: after building %s, %s", ", ".join(sorted(variants)), reason)
    if stopped is not None:
        log.info("compress: %s", stopped)
    log.info("compress: %s", reason)
    save_selection(ws, shelf.out, rows, selected, reason)
    write_json(ws.reports / "compression.json",
               {"variants": rows, "selected": selected, "reason": reason,
                "budget": cfg.compress.select.model_dump(), "skipped": skipped,
                "prune_ratios": {pruned_name(r): why for r, why in ratio_why.items()},
                "distillation_gain": distillation_gain(rows)})
    plot_pareto(rows, selected, ws.reports / "figures" / "pareto.png")
    trained = "distilled" in shelf.variants
    save_student(ws, shelf.variants, None if trained else skipped.get("distilled", "not built"))
    for path in ckpt.parent.glob("compress-*.pt"):
        path.unlink()
    return {"variants": len(rows), "selected": selected, "reason": reason,
            "student": "trained" if trained else "skipped"}


def save_selection(ws: Workspace, out: Path, rows: list[dict], selected: str | None,
                   reason: str) -> None:
    """models/selected: the chosen variant (or the teacher) with why, so promote can judge it."""
    import shutil

    shutil.rmtree(ws.model_dir("selected"), ignore_errors=True)
    shutil.copytree(out / (selected or "teacher"), ws.model_dir("selected"))
    chosen = next(r for r in rows if r["name"] == (selected or "teacher"))
    write_json(ws.model_dir("selected") / "selection.json",
               {"variant": selected, "fits_budget": selected is not None, "reason": reason,
                "params": chosen["params"]})


def save_student(ws: Workspace, variants: dict, not_trained: str | None) -> None:
    """models/student: the distilled student, or a note of why none was trained; and the
    training curves of the student (or, without one, of the pruned fine-tunes)."""
    import shutil

    from nets.io import save_model
    from tasks.report import plot_history

    shutil.rmtree(ws.model_dir("student"), ignore_errors=True)
    if not_trained is None:
        student = variants["distilled"]
        save_model(student.model, student.card, ws.model_dir("student"))
        history, title = student.history, f"student ({student.card['arch']}, distilled)"
    else:
        write_json(ws.model_dir("student") / "skipped.json", {"reason": not_trained})
        tuned = next((v for v in variants.values() if v.history), None)  # the mildest pruning
        history = tuned.history if tuned else []
        title = f"{tuned.name} fine-tune (no student trained)" if tuned else "no training in compress"
    write_csv(ws.reports / "plots" / "compress.csv", history)
    plot_history(history, ws.reports / "figures" / "compress_curves.png", title)


def run_evaluate(ws: Workspace, cfg: Config) -> dict:
    from nets.io import load_model, model_file
    from tasks.evaluate import evaluate_model, null_model, predict_proba
    from tasks.promote import summary_row
    from tasks.report import write_evaluation_plots, write_prediction_plots

    meta = read_json(ws.processed / "meta.json")
    test, train = load_split(ws, "test"), load_split(ws, "train")
    null, null_pred = null_model(train, test, meta["classes"], (meta["mean"], meta["std"]),
                                 cfg.evaluate)
    results = {}
    for role in ("teacher", "student", "selected"):
        model_dir = ws.model_dir(role)
        if role != "teacher" and not (model_dir / "model.json").exists():
            continue  # no student trained (compress.build: lazy), or no selection yet
        # the selected model is judged as it is served: from its ONNX export
        model, card = load_model(model_dir, prefer_onnx=role == "selected")
        served = model_dir / "model.onnx" if role == "selected" else model_file(model_dir)
        results[role] = {"arch": card["arch"],
                         "method": card.get("compression", {}).get("method", "none"),
                         **evaluate_model(model, card, served, test, cfg.evaluate, null_pred)}
        if role == "selected":
            selection = read_json(model_dir / "selection.json")
            results[role].update(variant=selection["variant"], selection=selection["reason"],
                                 fits_budget=selection["fits_budget"], params=selection["params"])
        if role == cfg.promote.candidate:  # its test probabilities feed ROC and sample plots
            candidate_proba = predict_proba(model, card, test[0])
    results["null_model"] = null
    candidate = cfg.promote.candidate
    metrics = {"candidate": candidate, **summary_row(results[candidate]),
               "per_class_recall": results[candidate]["per_class_recall"], **results}
    write_json(ws.reports / "metrics.json", metrics)
    write_evaluation_plots(ws.reports, results[candidate], meta["classes"])
    write_prediction_plots(ws.reports, test, candidate_proba, meta["classes"])
    return {"candidate": candidate, **summary_row(results[candidate]),
            "null_accuracy": results["null_model"]["accuracy"]}


# the mains of the registry's pure stages (evergreen/stages.py), by name; they write the
# workspace, and are pure in DVC's sense: a function of data version, params and code
STAGE_MAINS = {entry.name: load_main(entry) for entry in pure_stages()}


def shown(source: str | tuple[str, str]) -> str:
    from tasks.ingest import shown_source

    return shown_source(source)


def run_ingest(ws: Workspace, cfg: Config, source: str | tuple[str, str] | None) -> dict:
    """Read, check and land `source` as a new batch, or quarantine it (exit 2).

    With no source, the default one (digits) is ingested if the dataset is empty.
    """
    from tasks.ingest import has_samples, land_batch, quarantine_candidate

    if source is None:
        if has_samples(ws.batches):
            return {"batch_id": None, "added": 0, "source": None}
        source = cfg.ingest.source
    candidate = read_candidate(ws, cfg, source)
    summary = {"source": shown(source), "batch_id": None, "added": 0, "read": len(candidate.batch)
               + candidate.duplicates, "already_present": candidate.present,
               "repeated_in_batch": candidate.repeats,
               "dropped": [vars(r) for r in candidate.rejected],
               "skipped": [vars(r) for r in candidate.log.skipped], "notes": candidate.log.notes}
    if len(candidate.batch) == 0:
        log.info("ingest %s: nothing new (%d samples already in the dataset)", shown(source),
                 candidate.duplicates)
        return summary
    report = check_batch(ws, cfg, candidate)
    if not report.success:
        where = quarantine_candidate(candidate, report.failures, ws.quarantine)
        failed = "\n  ".join(report.failures)
        raise DataValidationError(f"{shown(source)}: batch {candidate.batch_id} failed validation:\n  "
                                  f"{failed}\nquarantined in {where}; the dataset is unchanged")
    land_batch(candidate, ws.batches)
    log.info("ingest %s: %d new samples (batch %s), %d repeated in the batch, %d already present, "
             "%d bad samples dropped", shown(source), len(candidate.batch), candidate.batch_id,
             candidate.repeats, candidate.present, len(candidate.rejected))
    for line in report.warnings:  # landed: the retrain, its label-noise screen and the gates decide
        log.warning("ingest %s: batch %s drifted (landed, validate.on_drift is warn): %s",
                    shown(source), candidate.batch_id, line)
    return {**summary, "batch_id": candidate.batch_id, "added": len(candidate.batch),
            "drift": report.warnings}


def read_candidate(ws: Workspace, cfg: Config, source: str | tuple[str, str]):
    """Read and deduplicate; unreadable sources and (by policy) bad samples are quarantined."""
    from tasks.ingest import prepare_batch, quarantine_candidate, quarantine_source
    from tasks.reading import ReadLog

    log = ReadLog()
    try:
        candidate = prepare_batch(source, cfg.ingest, ws.batches, ws.root, log)
    except BadInputError as exc:
        where = quarantine_source(source, str(exc), ws.quarantine, cfg.ingest.max_archive_bytes,
                                  log.opened)
        raise BadInputError(str(exc) + (f"\nthe files read are kept in {where}" if where else "")) \
            from None
    if candidate.rejected and cfg.ingest.on_bad_sample == "reject":
        reason = (f"{len(candidate.rejected)} bad samples and ingest.on_bad_sample is 'reject' "
                  "(set it to 'drop' to land the rest)")
        where = quarantine_candidate(candidate, [reason], ws.quarantine)
        listed = "\n  ".join(f"{r.source}: {r.reason}" for r in candidate.rejected[:20])
        more = len(candidate.rejected) - 20
        listed += f"\n  … and {more} more" if more > 0 else ""
        raise BadInputError(f"{shown(source)}: {reason}:\n  {listed}\n"
                            f"batch quarantined in {where}; the dataset is unchanged")
    return candidate


def check_batch(ws: Workspace, cfg: Config, candidate):
    """Per-sample and drift checks against the dataset; JSON and HTML reports under reports/."""
    from tasks.ingest import read_metadata
    from tasks.validate import render_html, validate_batch, write_report

    report = validate_batch(candidate.meta, read_metadata(ws.batches), cfg.validate_,
                            candidate.duplicates)
    report.results["dropped"] = [vars(r) for r in candidate.rejected]
    out = ws.reports / "ingest" / candidate.batch_id
    write_report(report, out.with_suffix(".json"))
    atomic_write_bytes(out.with_suffix(".html"),
                       render_html(report, f"batch {candidate.batch_id} from {shown(candidate.source)}")
                       .encode())
    return report


def quarantine_batch(ws: Workspace, batch_id: str, reason: str) -> str:
    """Move a landed batch out of the dataset into data/quarantine/<id>/ with its reasons."""
    target = ws.quarantine / batch_id
    target.mkdir(parents=True, exist_ok=True)
    for path in ws.batches.glob(f"{batch_id}.*"):
        path.replace(target / path.name)
    atomic_write_bytes(target / "reasons.txt", (reason + "\n").encode())
    report = ws.reports / "validation.json"
    if report.exists():
        atomic_write_bytes(target / "validation.json", report.read_bytes())
    return str(target)


def champion_accuracy(ws: Workspace, registry: dict, test, classes: list[str]) -> float | None:
    """The champion re-evaluated on the current test split (None if not comparable)."""
    from nets.io import load_model
    from tasks.evaluate import predict_proba

    model, card = load_model(ws.root / registry["versions"][registry["champion"]]["path"])
    if card["classes"] != classes or tuple(card["in_shape"]) != tuple(test[0].shape[1:]):
        log.warning("champion %s has other classes or input shape; no champion comparison",
                    registry["champion"])
        return None
    return float((predict_proba(model, card, test[0]).argmax(1) == test[1]).mean())


def run_promote(ws: Workspace, cfg: Config, run_id: str, data_version: str | None,
                full_params_hash: str, extra: dict | None = None) -> dict:
    """Gate the candidate against thresholds, the null model and the champion; record it.

    `extra` joins the registry entry (the retraining flow records its batches there).
    """
    from evergreen.workspace import git_commit
    from nets.io import file_sha256, model_file, read_card
    from tasks.promote import (
        gate_table,
        load_registry,
        now,
        record,
        run_gates,
        save_registry,
        store_version,
        summary_row,
        verdict_line,
    )
    from tasks.retrain import challenger_gates

    metrics = read_json(ws.reports / "metrics.json")
    role = cfg.promote.candidate
    model_dir = ws.model_dir(role)
    sha = file_sha256(model_file(model_dir))
    registry = load_registry(ws.registry)
    champion = registry["champion"]
    entry = {"run_id": run_id, "role": role, "arch": metrics[role]["arch"],
             "compression": metrics[role].get("method", "none"),
             "variant": metrics[role].get("variant"),
             "metrics": {**summary_row(metrics[role]),
                         "per_class_recall": metrics[role]["per_class_recall"],
                         "null_accuracy": metrics["null_model"]["accuracy"],
                         "teacher_accuracy": metrics["teacher"]["accuracy"]},
             "data_version": data_version, "params_hash": full_params_hash,
             # processes that trained the teacher (its card; 1 for cards from before DDP)
             "train_world_size": read_card(ws.model_dir("teacher")).get("training", {})
                                 .get("world_size", 1),
             # what the data decided where params say auto (tasks.train.adapt)
             "auto": read_card(ws.model_dir("teacher")).get("auto"),
             "git_commit": git_commit(ws.root), "time": now(), "champion_before": champion,
             "lineage": data_lineage(ws, cfg), **(extra or {})}
    if champion and registry["versions"][champion]["sha256"] == sha:
        entry.update(version=champion, verdict="unchanged", gates=[],
                     reasons=[f"candidate is the champion {champion}: nothing changed"])
        save_registry(ws.registry, record(registry, entry, False, ""))
        return {**entry, "new_version": False}
    champ_acc = champion_accuracy(ws, registry, load_split(ws, "test"),
                                  read_json(ws.processed / "meta.json")["classes"]) if champion else None
    comparison = challenger_comparison(ws, registry, cfg) if champion else None
    gates = run_gates(metrics[role], champ_acc, cfg.promote,
                      comparison["latency"] if comparison else None)
    gates += challenger_gates(comparison, cfg.promote) if comparison else []
    # a selection that found no variant within the compression budget is not promoted
    over_budget = [] if metrics[role].get("fits_budget", True) else [metrics[role]["selection"]]
    passed = all(g.passed for g in gates) and not over_budget
    known = set(registry["versions"])
    version = store_version(registry, model_dir, ws.versions, sha,
                            ws.model_dir("teacher") if role != "teacher" else None)
    entry.update(version=version, verdict="promoted" if passed else "rejected",
                 gates=gate_table(gates),
                 reasons=[g.reason() for g in gates if not g.passed] + over_budget,
                 why_not=verdict_line(gates, over_budget),
                 champion_accuracy_on_current_test=champ_acc, comparison=comparison)
    save_registry(ws.registry, record(registry, entry, passed, promotion_reason(run_id, comparison)))
    return {**entry, "new_version": version not in known}


# --- champion vs challenger (continual retraining, issue 4) -----------------------------

def data_lineage(ws: Workspace, cfg: Config) -> dict:
    """The batches that make this data version, the split params that place its samples, and
    the batches that landed with a drift warning (each with its lines)."""
    from tasks.retrain import landed_batches

    batches = landed_batches(ws.batches)
    return {"batches": batches, "preprocess": cfg.preprocess.model_dump(),
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
    from evergreen.config import PreprocessConfig
    from tasks.promote import champion_entry
    from tasks.retrain import split_of_batches

    lineage = (champion_entry(registry) or {}).get("lineage")
    if not lineage:
        return None
    # a lineage from before group splits was split sample by sample
    split_params = {"group_split": "off", **lineage["preprocess"]}
    return split_of_batches(ws.batches, lineage["batches"],
                            PreprocessConfig.model_validate(split_params))


def challenger_comparison(ws: Workspace, registry: dict, cfg: Config) -> dict | None:
    """Champion and candidate, as served, on the current test split and the champion's old one."""
    from tasks.retrain import compare_to_champion

    test = load_split(ws, "test")
    classes = np.asarray(read_json(ws.processed / "meta.json")["classes"])
    champion_dir = ws.root / registry["versions"][registry["champion"]]["path"]
    return compare_to_champion(champion_dir, ws.model_dir(cfg.promote.candidate),
                               cfg.promote.candidate == "selected", (test[0], classes[test[1]]),
                               champion_old_test(ws, registry), cfg.promote.mcnemar_alpha,
                               cfg.evaluate)


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


def report_links(ws: Workspace) -> dict[str, str]:
    """The other reports, relative to reports/: data validation, recent ingest checks, JSON."""
    links = {}
    for name, label in (("validation.html", "dataset validation (Great Expectations)"),
                        ("metrics.json", "metrics (JSON, DVC metrics)"),
                        ("compression.json", "compression variants (JSON)")):
        if (ws.reports / name).exists():
            links[label] = name
    recent = sorted((ws.reports / "ingest").glob("*.html"), key=lambda p: p.stat().st_mtime)[-5:]
    for path in reversed(recent):
        links[f"ingest check of batch {path.stem}"] = f"ingest/{path.name}"
    return links


def write_run_report(ws: Workspace, outcome: dict, stages: dict | None = None) -> Path:
    """reports/run.html: the run's verdict, gates, metrics and plots in one self-contained page."""
    from tasks.run_report import read_figures, render_run_report

    compression = ws.reports / "compression.json"
    page = render_run_report(outcome, read_json(ws.reports / "metrics.json"),
                             read_json(compression) if compression.exists() else None,
                             read_figures(ws.reports / "figures"), report_links(ws), stages)
    path = ws.reports / "run.html"
    atomic_write_bytes(path, page.encode())
    return path
