"""The warm-start benchmark: time for a warm start (with replay) and for training from
scratch to reach the champion teacher's accuracy, and the warm model's forgetting."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from evergreen.config import RetrainConfig, TrainConfig, load_config
from evergreen.errors import EvergreenError
from evergreen.workspace import Workspace
from flows.training import run_stage
from mains.processed import load_split
from mains.promote import champion_old_test
from mains.retrain import champion_teacher, retrain_plan
from mains.train import new_sample_mask
from mains.versions import load_registry
from tasks.retrain import Split, predicted_names, replay_mix, warm_start_fit


def measure_warm_vs_scratch(workspace: str, overrides: list[str] | None = None) -> dict:
    """For `evergreen bench`: on a workspace with a champion and new batches landed since,
    build the new dataset, then time a warm start and a from-scratch training to the
    champion teacher's val accuracy, and the warm model's drop on the old test split.

    Changes data/processed (the new dataset version); trains nothing into models/.
    """
    from nets.io import load_model

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
    return warm_vs_scratch(teacher, card, train, new_sample_mask(train[0], plan["new"]),
                           load_split(ws, "val"), old, cfg.train, cfg.retrain)


def seconds_to_target(history: list[dict], seconds: float, target: float) -> float | None:
    """Training time until the first epoch whose val accuracy reaches `target` (epochs of one
    fit cost the same), or None if it never does."""
    per_epoch = seconds / max(len(history), 1)
    hit = next((i for i, row in enumerate(history) if row["val_acc"] >= target - 1e-9), None)
    return None if hit is None else per_epoch * (hit + 1)


def warm_vs_scratch(teacher, card: dict, train: Split, is_new: np.ndarray, val: Split,
                    old_test: Split | None, train_cfg: TrainConfig, cfg: RetrainConfig) -> dict:
    """Time for a warm start (with replay) and for training from scratch on all the data to
    reach the champion teacher's accuracy on the current val split; and the warm model's
    accuracy drop on the champion's old test split, in points.

    `train`/`val` labels are class indices in card["classes"]; old_test labels are names.
    """
    from tasks.train import train_model

    classes = list(card["classes"])
    target = float((predicted_names(teacher, card, val[0]) == np.asarray(classes)[val[1]]).mean())
    mixed, mix = replay_mix(train, is_new, cfg.replay_ratio, train_cfg.seed)
    start = time.perf_counter()
    warm, warm_hist = warm_start_fit(copy.deepcopy(teacher), card, mixed, val, train_cfg, cfg)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    _, _, scratch_hist = train_model(train, val, classes, (card["mean"], card["std"]), train_cfg)
    scratch_s = time.perf_counter() - start
    warm_to, scratch_to = (seconds_to_target(warm_hist, warm_s, target),
                           seconds_to_target(scratch_hist, scratch_s, target))
    out = {"target_val_accuracy": target, **mix,
           "warm": {"seconds": warm_s, "epochs": len(warm_hist), "seconds_to_target": warm_to,
                    "final_val_accuracy": warm_hist[-1]["val_acc"]},
           "scratch": {"seconds": scratch_s, "epochs": len(scratch_hist),
                       "seconds_to_target": scratch_to,
                       "final_val_accuracy": scratch_hist[-1]["val_acc"]},
           "time_ratio": warm_to / scratch_to if warm_to and scratch_to else None}
    if old_test is not None and len(old_test[1]):
        before = float((predicted_names(teacher, card, old_test[0]) == old_test[1]).mean())
        after = float((predicted_names(warm, card, old_test[0]) == old_test[1]).mean())
        out["old_test"] = {"samples": int(len(old_test[1])), "champion_accuracy": before,
                           "warm_accuracy": after, "drop_points": 100 * (before - after)}
    return out
