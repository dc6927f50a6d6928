"""GTSRB with default params: the whole run's time, time to 97%, the official test accuracy
and the compression ratios. Needs the published data (`EVERGREEN_GTSRB`, see BENCHMARKS.md);
skipped with a note without it, as tests and CI never download data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from bench.report import entry, not_run

GOAL_ACCURACY, GOAL_MINUTES = 0.97, 20.0
NAMES = ("gtsrb_official_accuracy", "gtsrb_run_minutes", "gtsrb_time_to_97",
         "gtsrb_compression_speedup", "gtsrb_compression_size_ratio", "gtsrb_compression_drop")


def data_root() -> Path | None:
    """The GTSRB folder (holding Final_Training/ and Final_Test/), from EVERGREEN_GTSRB."""
    root = os.environ.get("EVERGREEN_GTSRB")
    if root and (Path(root) / "Final_Training" / "Images").is_dir() \
            and (Path(root) / "Final_Test" / "Images").is_dir():
        return Path(root)
    return None


def official_accuracy(model_dir: Path, onnx: bool, test: tuple) -> float:
    from nets.io import load_model
    from tasks.evaluate import label_indices, predict_proba

    model, card = load_model(model_dir, prefer_onnx=onnx)
    y, unknown = label_indices(test[1], card["classes"])
    assert not unknown, f"official test labels unknown to the model: {unknown}"
    return float((predict_proba(model, card, test[0]).argmax(1) == y).mean())


def official_test(root: Path, ws: Path, shape: tuple[int, ...]) -> tuple:
    from evergreen.config import load_config
    from tasks.ingest import ReadLog, read_labelled

    cfg = load_config(ws / "params.yaml").ingest.model_copy(
        update={"channels": "auto", "image_size": "auto"})
    batch, _ = read_labelled(str(root / "Final_Test" / "Images"), cfg, ws, ReadLog(), shape)
    return batch.x, batch.labels


def seconds_to(history_csv: Path, seconds: float, target: float) -> float | None:
    from bench.warm_start import seconds_to_target

    with history_csv.open() as fh:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return seconds_to_target(history, seconds, target)


def gtsrb(quick: bool, scratch: Path) -> dict:
    from bench.pipeline import make_workspace, timed_run

    root = data_root()
    if root is None or quick:
        why = ("not in --quick: a full default run on 39,209 photos" if root else
               "GTSRB not found: set EVERGREEN_GTSRB to the GTSRB folder (BENCHMARKS.md says how "
               "to get it)")
        return {n: not_run(None, why) for n in NAMES}
    ws = make_workspace(scratch / "gtsrb_ws", quick=False)
    wall = timed_run(ws, scratch / "gtsrb_times.json", timeout=5400,
                     args=("--data", str(root / "Final_Training" / "Images")))
    stages = json.loads((scratch / "gtsrb_times.json").read_text())["stage_seconds"]
    report = json.loads((ws / "reports" / "compression.json").read_text())
    rows = {r["name"]: r for r in report["variants"]}
    teacher_card = json.loads((ws / "models" / "teacher" / "model.json").read_text())
    test = official_test(root, ws, tuple(teacher_card["in_shape"]))
    teacher_acc = official_accuracy(ws / "models" / "teacher", False, test)
    selected_acc = official_accuracy(ws / "models" / "selected", True, test)
    chosen = rows.get(report["selected"] or "", rows["teacher"])
    speedup = rows["teacher"]["latency_ms_p50"] / chosen["latency_ms_p50"]
    size = rows["teacher"]["size_bytes"] / chosen["size_bytes"]
    drop = 100 * (teacher_acc - selected_acc)
    to_97 = seconds_to(ws / "reports" / "plots" / "train.csv", stages["train"], GOAL_ACCURACY)
    what = f"selected {chosen['name']} vs teacher"
    return {
        "gtsrb_official_accuracy": entry(selected_acc, "accuracy", f"{what}, {len(test[1])} "
                                         f"official test photos; teacher {teacher_acc:.4f}",
                                         f">= {GOAL_ACCURACY}", selected_acc >= GOAL_ACCURACY),
        "gtsrb_run_minutes": entry(wall / 60, "min", "evergreen run --data Final_Training/Images",
                                   f"<= {GOAL_MINUTES}", wall / 60 <= GOAL_MINUTES,
                                   stage_seconds={k: round(v, 1) for k, v in stages.items()}),
        "gtsrb_time_to_97": entry(to_97, "s", "teacher training until val accuracy 0.97", None,
                                  None),
        "gtsrb_compression_speedup": entry(speedup, "ratio", f"{what}, batch-1 p50 onnxruntime",
                                           ">= 3", speedup >= 3),
        "gtsrb_compression_size_ratio": entry(size, "ratio", f"{what}, file size", ">= 4", size >= 4),
        "gtsrb_compression_drop": entry(drop, "points", f"{what}, official test", "<= 1.0",
                                        drop <= 1.0)}
