"""What the CLI prints: run outcome, registry status, predictions, the champion's evaluation."""

from __future__ import annotations

from evergreen.errors import BadInputError
from evergreen.workspace import Workspace, read_json


def print_outcome(result: dict) -> None:
    outcome = result["promote"]
    ran = [n for n, s in result["stages"].items() if s["ran"]] or ["none (all current)"]
    m = outcome["metrics"]
    print(f"stages run: {', '.join(ran)}")
    print(f"candidate {outcome['version']} ({outcome['role']}, {outcome['arch']}): "
          f"accuracy {m['accuracy']:.4f}, macro-F1 {m['f1_macro']:.4f}, "
          f"null model {m['null_accuracy']:.4f}, teacher {m['teacher_accuracy']:.4f}, "
          f"latency p50 {m['latency_ms_p50']:.2f} ms, {m['size_bytes'] / 1024:.1f} KB")
    if outcome.get("stands_in_for"):  # the selected variant failed where its teacher passed
        print(f"the teacher stands in for {outcome['stands_in_for']['variant']}, which failed: "
              + "; ".join(outcome["stands_in_for"]["failed"]))
    print(f"verdict: {outcome['verdict']}")
    for reason in outcome["reasons"]:
        print(f"  - {reason}")
    if outcome.get("why_not"):  # the last line: the gate that failed and the setting behind it
        print(outcome["why_not"])


def status_view(ws: Workspace) -> dict:
    """Champion (version, metrics, data version) and every candidate with its verdict."""
    from mains.versions import load_registry
    from tasks.promote import champion_entry

    registry = load_registry(ws.registry)
    candidates = [{k: c.get(k) for k in ("version", "verdict", "reasons", "run_id", "time",
                                         "data_version", "role", "arch")}
                  | {"accuracy": c["metrics"]["accuracy"]} for c in registry["candidates"]]
    champion = None
    if registry["champion"]:
        # its latest entry: a forced promotion or a rollback may pick a once-rejected version
        entry = champion_entry(registry)
        switch = next((h for h in reversed(registry["history"])
                       if h["champion"] == registry["champion"]), {})
        champion = {"version": registry["champion"], "metrics": entry["metrics"],
                    "data_version": entry["data_version"], "since": switch.get("time", entry["time"]),
                    "path": registry["versions"][registry["champion"]]["path"]}
    serving = ws.reports / "serving.json"  # evergreen api: the last drift window, feedback
    return {"workspace": str(ws.root), "champion": champion, "candidates": candidates,
            "history": registry["history"],
            "serving": read_json(serving) if serving.exists() else None}


def print_status(view: dict) -> str:
    champ = view["champion"]
    lines = [f"workspace: {view['workspace']}"]
    if champ:
        m = champ["metrics"]
        lines.append(f"champion: {champ['version']} accuracy {m['accuracy']:.4f} macro-F1 "
                     f"{m['f1_macro']:.4f} data {champ['data_version']} (since {champ['since']})")
    else:
        lines.append("champion: none yet (run `evergreen run`)")
    for c in view["candidates"]:
        why = f" — {'; '.join(c['reasons'])}" if c["reasons"] else ""
        lines.append(f"  {c['time']} {c['version']:>4} {c['verdict']:<9} acc {c['accuracy']:.4f}{why}")
    lines += history_lines(view.get("history", []))
    lines += serving_lines(view.get("serving"))
    return "\n".join(lines)


def serving_lines(serving: dict | None) -> list[str]:
    """What `evergreen api` last reported: its drift window and the feedback gathered."""
    if not serving:
        return []
    lines = ["serving (evergreen api):"]
    if w := serving.get("drift"):
        verdict = "DRIFT: " + "; ".join(w["reasons"]) if w["drifted"] else "no drift"
        lines.append(f"  last window on {w['version']}: {w['samples']} inputs, pixel PSI "
                     f"{w['pixel_psi']:.3g}, predicted-class p {w['class_pvalue']:.3g}: {verdict}")
    if f := serving.get("feedback"):
        lines.append(f"  feedback: {f['pending']} labelled inputs pending, {f['batches']} "
                     f"batch(es) dropped in {f['folder']}")
    return lines


def history_lines(history: list[dict]) -> list[str]:
    """Who was champion when, and why (promotions, forced promotions, rollbacks)."""
    lines = ["champion history:"] if history else []
    for h in history:
        by = f" by {h['by']}" if h.get("by") else ""
        lines.append(f"  {h['time']} {h.get('action', 'promote'):<13} {h['previous'] or '-':>4} -> "
                     f"{h['champion']}{by}: {h['reason']}")
    return lines


def print_retrain(result: dict) -> None:
    """A retrain's outcome: nothing new, or the batches, the training and the verdict."""
    batches = result["batches"]
    if batches["new"]:
        print(f"new batches: {len(batches['new'])} since champion {result['champion']}'s data, "
              f"{len(batches['usable'])} usable, {len(batches['quarantined'])} quarantined")
    for row in batches["quarantined"]:
        print(f"  quarantined {row['batch_id']} in {row['where']}: {'; '.join(row['reasons'])}")
    if result["status"] == "nothing-new":
        print(result["message"])
        return
    from tasks.retrain import SPLIT_COMPARISONS

    print(f"training: {result['training']['mode']} ({result['training']['why']})")
    comparison = result["promote"].get("comparison") or {}
    for name in SPLIT_COMPARISONS:
        if c := comparison.get(name):
            m = c["mcnemar"]
            print(f"{name} ({c['samples']} samples): champion {c['champion_accuracy']:.4f}, "
                  f"challenger {c['challenger_accuracy']:.4f}; McNemar p={m['pvalue']:.3g} "
                  f"({m['champion_only']} vs {m['challenger_only']} discordant): "
                  f"{'improvement' if c['improvement'] else 'no significant difference'}")
    print_outcome(result)  # last: the verdict, and why not


def predict_paths(ws: Workspace, paths: list[str]) -> tuple[list[dict], list[str]]:
    """The champion's class probabilities for each image file (folders: every image in them),
    and one error line per file that could not be read; files are decoded as ingest does."""
    from evergreen.config import load_config
    from mains.versions import load_registry
    from nets.io import load_model
    from nets.runtime import OnnxModel
    from tasks.evaluate import predict_proba
    from tasks.ingest import collect_inputs, load_inputs

    registry = load_registry(ws.registry)
    if not registry["champion"]:
        raise BadInputError(f"{ws.registry}: no champion yet; run `evergreen run` first")
    cfg = load_config(ws.params).ingest
    inputs, errors = collect_inputs(paths, cfg)
    # served from the ONNX export (onnxruntime) when the champion has one
    model, card = load_model(ws.root / registry["versions"][registry["champion"]]["path"],
                             prefer_onnx=True)
    runtime = "onnxruntime" if isinstance(model, OnnxModel) else "torch"
    rows = []
    for items, x, bad in load_inputs(inputs, card["in_shape"], cfg):
        errors += bad
        proba = predict_proba(model, card, x) if len(x) else []
        rows += [{"path": item.shown, "class": card["classes"][int(row.argmax())],
                  "probability": float(row.max()),
                  "probabilities": {c: round(float(v), 6) for c, v in zip(card["classes"], row,
                                                                          strict=True)},
                  "champion": registry["champion"], "runtime": runtime}
                 for item, row in zip(items, proba, strict=True)]
    if not rows and not errors:
        raise BadInputError(f"{' '.join(paths)}: no image files found")
    return rows, errors


def predictions_csv(rows: list[dict]) -> bytes:
    """One row per image: path, class, probability, then each class's probability."""
    import csv
    import io

    from tasks.ingest import csv_cell

    classes = list(rows[0]["probabilities"]) if rows else []
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "class", "probability", *map(csv_cell, classes)])
    for row in rows:
        writer.writerow([csv_cell(row["path"]), csv_cell(row["class"]), f"{row['probability']:.6f}",
                         *(f"{row['probabilities'][c]:.6f}" for c in classes)])
    return buf.getvalue().encode()


def champion_served(ws: Workspace) -> tuple[str, object, dict]:
    """The champion's version, model as served (its ONNX export when it has one) and card."""
    from mains.versions import load_registry
    from nets.io import load_model

    registry = load_registry(ws.registry)
    if not registry["champion"]:
        raise BadInputError(f"{ws.registry}: no champion yet; run `evergreen run` first")
    path = ws.root / registry["versions"][registry["champion"]]["path"]
    return registry["champion"], *load_model(path, prefer_onnx=True)


def evaluate_source(ws: Workspace, source: str | tuple[str, str]) -> tuple[dict, list[str]]:
    """The champion's metrics on a labelled source read as ingest reads it, in the champion's
    shape; nothing is written. Returns the metrics and one error line per unreadable file.

    Labels the champion does not know are an error naming them: scored, they would count as
    mistakes the model could never avoid, and they usually mean a label mapping is off.
    """
    from evergreen.config import load_config
    from nets.runtime import OnnxModel
    from tasks.evaluate import label_indices, predict_proba, source_metrics
    from tasks.ingest import ReadLog, read_labelled, shown_source

    version, model, card = champion_served(ws)
    # the champion's channels and size, whatever ingest.channels / image_size say for new data
    cfg = load_config(ws.params).ingest.model_copy(update={"channels": "auto", "image_size": "auto"})
    log, shown = ReadLog(), shown_source(source)
    batch, rejected = read_labelled(source, cfg, ws.root, log, tuple(card["in_shape"]))
    errors = [f"{r.source}: {r.reason}" for r in rejected]
    if len(batch) == 0:
        raise BadInputError(f"{shown}: no sample could be read ({len(errors)} refused"
                            + (f", e.g. {errors[0]})" if errors else ")"))
    y, unknown = label_indices(batch.labels, card["classes"])
    if unknown:
        raise BadInputError(unknown_labels_message(shown, version, unknown, card["classes"]))
    metrics = source_metrics(y, predict_proba(model, card, batch.x), card["classes"])
    runtime = "onnxruntime" if isinstance(model, OnnxModel) else "torch"
    return {"source": shown, "champion": version, "runtime": runtime, "arch": card["arch"],
            "in_shape": list(card["in_shape"]), "classes": list(card["classes"]), **metrics,
            "unreadable": errors, "notes": log.notes}, errors


def unknown_labels_message(shown: str, version: str, unknown: dict[str, int], classes: list[str],
                           listed: int = 20) -> str:
    """One line: the labels the champion does not know (with counts) and the classes it has."""
    names = list(unknown)
    more = f" and {len(names) - listed} more" if len(names) > listed else ""
    known = classes[:listed] + (["..."] if len(classes) > listed else [])
    return (f"{shown}: label: {sum(unknown.values())} samples have labels champion {version} does "
            f"not know: {', '.join(f'{n!r} ({unknown[n]})' for n in names[:listed])}{more}; "
            f"expected one of its {len(classes)} classes [{', '.join(known)}]")


def evaluation_lines(result: dict, worst: int = 5) -> list[str]:
    """A short table: accuracy, macro-F1, samples, and the classes with the lowest recall."""
    measured = [(c, r) for c, r in result["per_class_recall"].items() if result["support"][c]]
    lowest = sorted(measured, key=lambda item: (item[1], item[0]))[:worst]
    lines = [f"champion {result['champion']} ({result['arch']}, {result['runtime']}) on "
             f"{result['source']}",
             f"  {'accuracy':<10} {result['accuracy']:.4f}",
             f"  {'macro-F1':<10} {result['f1_macro']:.4f}",
             f"  {'samples':<10} {result['samples']} ({len(measured)} of {len(result['classes'])} "
             "classes present)",
             f"  worst classes by recall: {'class':<12} {'recall':>7} {'samples':>8}"]
    lines += [f"  {'':<25}{c:<12} {r:>7.4f} {result['support'][c]:>8}" for c, r in lowest]
    return lines


def print_gan_outcome(result: dict) -> None:
    """What `evergreen gan run` prints: verdict, distance against floor and ceiling, files."""
    report, outcome = result["report"], result["promote"]
    print(f"generator {outcome['version']}: {outcome['verdict']}")
    print(f"  {report['metric']}: {report['distance']:.4g} (floor {report['floor']:.4g}, "
          f"ceiling {report['ceiling']:.4g}; {report['distance_to_ceiling']:.1%} of the ceiling)")
    low = min(report["coverage"], key=report["coverage"].get)
    print(f"  class coverage: {len(report['coverage'])} classes, lowest {low} at "
          f"{report['coverage'][low]:.1%}")
    for reason in outcome["reasons"]:
        print(f"  - {reason}")
    print("  reports/gan.json, reports/figures/gan_samples.png, models/gan_registry.json")
