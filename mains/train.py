"""train's main: the teacher from data/processed, trained from scratch (the pipeline) or
warm-started from the champion's teacher (continual retraining)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from evergreen.config import RetrainConfig, TrainConfig, params_hash
from evergreen.workspace import Workspace, atomic_write_bytes, write_csv
from mains.processed import checkpoint_for, load_split, read_meta


def run_train(ws: Workspace, section: TrainConfig, on_epoch=None) -> dict:
    """Train the teacher; models/teacher, its curves, and the run's throughput."""
    from tasks.train import train_model

    meta = read_meta(ws)
    ckpt, key = checkpoint_for(ws, "train", params_hash(section))
    train = load_split(ws, "train")
    start = time.perf_counter()
    model, card, history = train_model(train, load_split(ws, "val"),
                                       meta["classes"], (meta["mean"], meta["std"]), section,
                                       checkpoint=ckpt, checkpoint_key=key, on_epoch=on_epoch,
                                       root=ws.root)
    seconds = time.perf_counter() - start
    save_teacher(ws, model, card, history, f"teacher ({card['arch']})", ckpt)
    world = card.get("training", {}).get("world_size", 1)
    # end to end: launcher start-up and validation included; a resumed run counts all its epochs
    images_per_s = len(train[0]) * len(history) / seconds
    return {"epochs_run": len(history), "val_acc": history[-1]["val_acc"] if history else None,
            "world_size": world, "seconds": round(seconds, 2), "images_per_s": round(images_per_s, 1),
            "images_per_s_per_process": round(images_per_s / world, 1),
            "auto": card.get("auto")}


def run_warm_train(ws: Workspace, section: TrainConfig, retrain: RetrainConfig, teacher_dir: Path,
                   batch_ids: list[str], source: str) -> dict:
    """Fine-tune the champion's teacher on the new train samples plus a replay of old ones."""
    from nets.io import file_sha256, load_model
    from tasks.retrain import replay_mix, warm_start_fit

    teacher, card = load_model(teacher_dir)
    train, val = load_split(ws, "train"), load_split(ws, "val")
    mixed, mix = replay_mix(train, new_sample_mask(train[0], batch_ids),
                            retrain.replay_ratio, section.seed)
    ckpt, key = checkpoint_for(ws, "retrain", params_hash(retrain), params_hash(section),
                               file_sha256(teacher_dir / "model.safetensors"))
    start = time.perf_counter()
    model, history = warm_start_fit(teacher, card, mixed, val, section, retrain, ckpt, key)
    seconds = time.perf_counter() - start
    card = {**card, "training": {"world_size": 1, "warm_start": {
        "from": source, "epochs": retrain.epochs, "lr": retrain.lr, **mix}}}
    save_teacher(ws, model, card, history, f"teacher ({card['arch']}, warm start from {source})",
                 ckpt)
    return {"epochs_run": len(history), "val_acc": history[-1]["val_acc"] if history else None,
            "seconds": round(seconds, 2), **mix}


def save_teacher(ws: Workspace, model, card: dict, history: list[dict], title: str,
                 checkpoint: Path) -> None:
    """models/teacher, its training curves (CSV and figure); the epoch checkpoint goes."""
    from nets.io import save_model
    from tasks.plots import history_png

    save_model(model, card, ws.model_dir("teacher"))
    write_csv(ws.reports / "plots" / "train.csv", history)
    atomic_write_bytes(ws.reports / "figures" / "train_curves.png", history_png(history, title))
    checkpoint.unlink(missing_ok=True)


def new_sample_mask(x, batch_ids: list[str]) -> np.ndarray:
    """Which samples of a split's images (tasks.data.Images) come from the given batches."""
    names = np.array([store.folder.name for store in x.stores])
    return np.isin(names[x.store_of], batch_ids)
