"""Retrain: what is new since the champion, label-noise screening, replay, warm start, paired tests.

Plain functions; mains/retrain.py and flows/retraining.py wire them and mains/promote.py uses
the paired comparison. Predictions are compared as class names, so a champion with another class set
is still measured on the same samples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evergreen.config import (
    EvaluateConfig,
    PreprocessConfig,
    RetrainConfig,
    TrainConfig,
)
from tasks.data import subset
from tasks.promote import paired_summary

if TYPE_CHECKING:  # imported where a table is read: a no-op run never needs it
    import pandas as pd

Split = tuple[np.ndarray, np.ndarray]  # uint8 (N, C, H, W) pixels, labels (int index or str name)


# --- which batches are new --------------------------------------------------------------

def landed_batches(batches_dir: Path) -> list[str]:
    """Ids of the batches in the dataset (metadata and pixels both present), sorted."""
    if not batches_dir.exists():
        return []
    return sorted(p.stem for p in batches_dir.glob("*.csv") if has_pixels(batches_dir, p.stem))


def has_pixels(batches_dir: Path, batch_id: str) -> bool:
    """Its shards, or the packed .npz of a batch landed before shards (migrated on next run)."""
    return (batches_dir / batch_id).is_dir() or (batches_dir / f"{batch_id}.npz").exists()


def new_batches(landed: list[str], champion_batches: list[str]) -> list[str]:
    """Batches landed since the champion's data version."""
    known = set(champion_batches)
    return [b for b in landed if b not in known]


def batches_of_version(root: Path, data_version: str | None) -> list[str] | None:
    """Batch ids of a data version, from DVC's cached listing of data/batches (for a champion
    registered before lineage was recorded); None when the listing is not in the cache."""
    if not data_version or not data_version.endswith(".dir"):
        return None
    listing = root / ".dvc" / "cache" / "files" / "md5" / data_version[:2] / data_version[2:]
    if not listing.exists():
        return None
    return sorted(Path(e["relpath"]).stem for e in json.loads(listing.read_text())
                  if e["relpath"].endswith(".csv"))


def read_batch(batches_dir: Path, batch_id: str, meta: pd.DataFrame | None = None):
    """One batch: its images (tasks.data.Images, read on demand), labels (str) and metadata
    rows (from `meta` when given)."""
    from tasks.data import Images
    from tasks.ingest import read_metadata
    from tasks.ingest.batches import batch_images

    meta = read_metadata(batches_dir) if meta is None else meta
    rows = meta[meta["batch_id"] == batch_id].reset_index(drop=True)
    _, stores, store_of, index = batch_images(batches_dir, rows)
    return Images(stores, store_of, index), rows["label"].to_numpy(str), rows


def split_of_batches(batches_dir: Path, batch_ids: list[str], cfg: PreprocessConfig,
                     split: str = "test") -> Split | None:
    """One split (pixels, label names) of the dataset made of `batch_ids`, as preprocess makes it.

    A sample's split is a function of its content hash (or group) and cfg, so this is the champion's
    old test split whenever its batches are still in the dataset (None when none are).
    """
    from tasks.data import Images
    from tasks.ingest import read_metadata
    from tasks.ingest.batches import batch_images
    from tasks.preprocess import assign_splits, deduplicate

    present = set(b for b in batch_ids if (batches_dir / b).is_dir())
    if not present:
        return None
    everything = read_metadata(batches_dir)
    meta = everything[everything["batch_id"].isin(present)].reset_index(drop=True)
    _, stores, store_of, rows = batch_images(batches_dir, meta)
    keep, _, _ = deduplicate(meta)
    chosen = keep[assign_splits(meta, keep, cfg)[0] == split]
    return Images(stores, store_of[chosen], rows[chosen]), meta["label"].to_numpy(str)[chosen]


# --- label noise ------------------------------------------------------------------------

@dataclass
class NoiseCheck:
    """The champion's accuracy on a new batch against its own test accuracy."""

    batch_id: str
    scored: int  # samples whose label the champion knows
    accuracy: float | None  # None: too few samples to judge
    reference: float  # the champion's test accuracy
    threshold: float  # retrain.max_label_noise_drop

    @property
    def drop(self) -> float | None:
        return None if self.accuracy is None else self.reference - self.accuracy

    @property
    def suspect(self) -> bool:
        return self.drop is not None and self.drop > self.threshold

    def reason(self) -> str:
        if self.accuracy is None:
            return (f"batch {self.batch_id}: not scored for label noise ({self.scored} samples "
                    "with classes the champion knows, below retrain.min_scored_samples)")
        return (f"batch {self.batch_id}: suspected label noise: the champion's accuracy on it is "
                f"{self.accuracy:.4f} ({self.scored} samples), {self.drop:.4f} below its test "
                f"accuracy {self.reference:.4f} (retrain.max_label_noise_drop {self.threshold})")


def score_label_noise(batch_id: str, predicted: np.ndarray, labels: np.ndarray,
                      champion_classes: list[str], reference: float, cfg: RetrainConfig) -> NoiseCheck:
    """Score only samples of classes the champion knows (a new class is not noise)."""
    known = np.isin(labels, champion_classes)
    scored = int(known.sum())
    accuracy = float((predicted[known] == labels[known]).mean()) if scored >= cfg.min_scored_samples \
        else None
    return NoiseCheck(batch_id, scored, accuracy, float(reference), cfg.max_label_noise_drop)


# --- warm start with replay -------------------------------------------------------------

def replay_mix(train: Split, is_new: np.ndarray, ratio: float, seed: int) -> tuple[Split, dict]:
    """All new train samples plus `ratio` old ones per new one, drawn without replacement.

    With no new sample in the train split (a batch small enough to land in val/test),
    the whole train split is used.
    """
    new_idx, old_idx = np.flatnonzero(is_new), np.flatnonzero(~is_new)
    k = min(len(old_idx), int(round(ratio * len(new_idx))))
    replay = np.random.default_rng(seed).choice(old_idx, size=k, replace=False)
    keep = np.sort(np.concatenate([new_idx, replay])) if len(new_idx) else np.arange(len(is_new))
    info = {"new_samples": int(len(new_idx)), "replay_samples": int(len(keep) - len(new_idx)),
            "old_available": int(len(old_idx)), "replay_ratio": ratio}
    return (subset(train[0], keep), train[1][keep]), info


def warm_start_plan(cfg: RetrainConfig, train_cfg: TrainConfig, card: dict | None,
                    classes: list[str], in_shape: tuple[int, ...]) -> tuple[bool, str]:
    """Whether to fine-tune the champion's teacher, and why (or why train from scratch)."""
    from nets.io import card_options
    from tasks.train import model_options

    if cfg.mode == "full":
        return False, "retrain.mode is full: training from scratch"
    if card is None:
        return False, "the champion kept no teacher weights: training from scratch"
    if list(card["classes"]) != list(classes):
        added = sorted(set(classes) - set(card["classes"]))
        gone = sorted(set(card["classes"]) - set(classes))
        return False, (f"class set changed (new {added or 'none'}, gone {gone or 'none'}): "
                       "training from scratch with an output per class")
    # options params leave to the data (auto) match whatever the champion resolved them to
    auto = ({"dropout"} | ({"stem_stride"} if train_cfg.cnn.stem_stride is None else set())
            | ({"channels"} if train_cfg.cnn.channels == "auto" else set()))
    wanted = {k: v for k, v in model_options(train_cfg, in_shape).items() if k not in auto}
    has = {k: v for k, v in card_options(card).items() if k not in auto}
    if card["arch"] != train_cfg.model or wanted != has:
        return False, (f"train.model/options ({train_cfg.model} {wanted}) differ from the champion "
                       f"teacher's ({card['arch']} {has}): training from scratch")
    if tuple(card["in_shape"]) != tuple(in_shape):
        return False, f"input shape {tuple(in_shape)} differs from the champion's: training from scratch"
    return True, f"warm start from the champion's teacher ({card['arch']})"


def warm_settings(train_cfg: TrainConfig, cfg: RetrainConfig, card: dict):
    """The teacher's fit settings, with its augmentation and precision as its card records
    them, and the retrain section's epochs and learning rate."""
    from tasks.train import FitSettings
    from tasks.train.adapt import settings_augment

    recorded = card.get("auto", {}).get("augment")
    base = FitSettings.from_train(train_cfg.model_copy(update={"epochs": cfg.epochs}),
                                  settings_augment(recorded) if recorded else "configured")
    base.lr, base.lr_schedule = cfg.lr, "cosine"
    if train_cfg.precision == "auto":
        base.precision = card.get("auto", {}).get("precision", "fp32")
    return base


def warm_start_fit(model, card: dict, train: Split, val: Split, train_cfg: TrainConfig,
                   cfg: RetrainConfig, checkpoint: Path | None = None, checkpoint_key: str = ""):
    """Fine-tune the champion's teacher in its own normalization; returns (model, history)."""
    from tasks.train import fit

    return fit(model, train, val, (card["mean"], card["std"]), warm_settings(train_cfg, cfg, card),
               name="retrain", checkpoint=checkpoint, checkpoint_key=checkpoint_key)


# --- champion vs challenger -------------------------------------------------------------

def predicted_names(model, card: dict, x: np.ndarray) -> np.ndarray:
    """Class names the model predicts for uint8 images."""
    from tasks.evaluate import predict_proba

    return np.asarray(card["classes"])[predict_proba(model, card, x).argmax(1)]


SPLIT_COMPARISONS = ("current_test", "old_test")  # the test splits a comparison holds


def compare_to_champion(champion_dir: Path, challenger_dir: Path, challenger_onnx: bool,
                        current: Split, old: Split | None, alpha: float,
                        timing: EvaluateConfig) -> dict | None:
    """Champion and challenger (each as served) on the current test split and the champion's
    old one, and their batch-1 latency side by side; None when their inputs differ."""
    from nets.io import load_model
    from tasks.evaluate import side_by_side_latency

    champ, champ_card = load_model(champion_dir, prefer_onnx=True)
    chal, chal_card = load_model(challenger_dir, prefer_onnx=challenger_onnx)
    if tuple(champ_card["in_shape"]) != tuple(chal_card["in_shape"]):
        return None
    out = {}
    for name, split in zip(SPLIT_COMPARISONS, (current, old), strict=True):
        if split is None or len(split[1]) == 0:
            out[name] = None
            continue
        truth = np.asarray(split[1]).astype(str)
        out[name] = paired_summary(truth, predicted_names(champ, champ_card, split[0]),
                                   predicted_names(chal, chal_card, split[0]), alpha)
    out["latency"] = side_by_side_latency(champ, chal, tuple(chal_card["in_shape"]), timing)
    return out
