"""Distilled student vs its no-distillation control over several seeds (mean and spread).

One seed is noise on a test split of a few hundred images (one image is ~0.3 points), so
the compress stage's single pair does not settle whether distillation helps; this does.

    python -m bench.distillation [--workspace DIR] [--seeds 0 1 2] [--set compress.epochs=20]

The workspace must hold a trained teacher and processed splits (after `evergreen run`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from evergreen.config import CompressConfig, load_config
from evergreen.workspace import Workspace


def test_accuracy(model, card: dict, test) -> float:
    from tasks.evaluate import predict_proba

    return float((predict_proba(model, card, test[0]).argmax(1) == test[1]).mean())


def distillation_seeds(ws: Workspace, cfg: CompressConfig, seeds: list[int]) -> dict:
    """Train the distilled student and its control once per seed; test accuracy of each."""
    from mains.processed import load_split
    from nets.io import load_model
    from tasks.compress import train_student

    teacher, card = load_model(ws.model_dir("teacher"))
    train, val, test = (load_split(ws, name) for name in ("train", "val", "test"))
    runs, start = [], time.perf_counter()
    for seed in seeds:
        seeded = cfg.model_copy(update={"seed": seed})
        row = {"seed": seed}
        for role, distilled in (("distilled", True), ("control", False)):
            model, student_card, _ = train_student(teacher, card, train, val, seeded, distilled)
            row[role] = test_accuracy(model.eval(), student_card, test)
        row["gain"] = row["distilled"] - row["control"]
        runs.append(row)
    return summarize(runs) | {"seconds": round(time.perf_counter() - start, 1),
                              "teacher_accuracy": test_accuracy(teacher.eval(), card, test),
                              "test_samples": len(test[1]), "temperature": cfg.temperature,
                              "alpha": cfg.alpha, "epochs": cfg.epochs}


def summarize(runs: list[dict]) -> dict:
    """Mean and (sample) standard deviation of each role's accuracy and of the gain."""
    out = {"runs": runs}
    for key in ("distilled", "control", "gain"):
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["distilled_wins"] = sum(r["gain"] > 0 for r in runs)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    ws = Workspace(Path(args.workspace).resolve())
    cfg = load_config(ws.params, args.overrides).compress
    print(json.dumps(distillation_seeds(ws, cfg, args.seeds), indent=2))


if __name__ == "__main__":
    main()
