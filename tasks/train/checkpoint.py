"""Epoch checkpoints: plain tensors written atomically, read back only for the same run (its key).

The fit loop saves and resumes its parts and state here; the GAN loop its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tasks.train.state import FitParts, FitState

log = logging.getLogger("evergreen.train")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a crash leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path | None, key: str) -> dict | None:
    """The last epoch checkpoint of this very run (same key), loaded as plain tensors only."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # weights_only refuses pickled code; a torn file fails too
        log.warning("%s: not a plain-tensor checkpoint, refused (not unpickled); starting this "
                    "run from scratch: %s", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def resume_fit(parts: FitParts, checkpoint: Path | None, key: str, name: str) -> FitState | None:
    """The checkpointed run's state, its parts and RNGs restored; None when there is none.

    The leader reads the checkpoint and shares it, so every rank resumes from the same one.
    """
    replica = parts.replica
    resumed = replica.share(load_checkpoint(checkpoint, key) if replica.leader else None)
    if not resumed:
        return None
    parts.model.load_state_dict(resumed["model"])
    parts.opt.load_state_dict(resumed["optim"])
    parts.sched.load_state_dict(resumed["sched"])
    parts.gen.set_state(resumed["gen"])
    torch.set_rng_state(resumed["rng"])
    position = int(resumed.get("position", 0))
    state = FitState(resumed["history"], resumed["best"], resumed["best_state"], resumed["stale"],
                     resumed["epoch"] + (0 if position else 1), position,
                     (float(resumed.get("loss_sum", 0.0)), int(resumed.get("seen", 0))))
    if position:
        log.info("%s: resumed inside epoch %d at sample %d", name, resumed["epoch"], position)
    else:
        log.info("%s: resumed from epoch %d", name, resumed["epoch"])
    return state


def save_fit(checkpoint: Path, key: str, epoch: int, parts: FitParts, state: FitState,
             done: bool = True) -> None:
    """Checkpoint `epoch`, at its end or (done False) at state.position inside it: all a resumed
    run needs to continue as if never stopped."""
    save_checkpoint(checkpoint, {
        "key": key, "epoch": epoch, "model": parts.model.state_dict(),
        "optim": parts.opt.state_dict(), "sched": parts.sched.state_dict(),
        "gen": parts.gen.get_state(), "rng": torch.get_rng_state(), "history": state.history,
        "best": state.best, "best_state": state.best_state, "stale": state.stale,
        "position": 0 if done else state.position,
        "loss_sum": 0.0 if done else state.carry[0], "seen": 0 if done else state.carry[1]})
