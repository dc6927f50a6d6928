"""Feedback: the true label of a served input. Served inputs are kept in a bounded ring (the
oldest rotate out); a labelled one is written at once as a PNG under the pending folder (so a
restart loses nothing), and every `batch` of them moves into the drop folder as one batch,
<drop>/feedback-<time>/<label>/<id>.png with the watcher's marker, for `evergreen watch` to
ingest with every usual check."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

LABEL = re.compile(r"^[^/\\\x00-\x1f]{1,200}$")  # a folder name: no separators or controls


class FeedbackError(Exception):
    """A feedback the server refuses: an HTTP status and a message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class FeedbackStore:
    """Served inputs by prediction id (at most `keep` of them in at most `keep_bytes`), labelled
    ones pending, batches dropped."""

    def __init__(self, pending: Path, drop: Path, batch: int, keep: int, marker: str,
                 keep_bytes: int = 256 << 20):
        self.pending, self.drop, self.batch, self.keep, self.marker = pending, drop, batch, keep, marker
        self.keep_bytes, self.held = keep_bytes, 0  # pixels kept: a count alone grows with image size
        self.served: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()
        self.labelled = sum(1 for _ in pending.glob("*/*.png")) if pending.exists() else 0
        self.dropped = 0

    def remember(self, ids: list[str], x: np.ndarray) -> None:
        """Keep the served images (uint8 C, H, W) for feedback and rotate the oldest out."""
        with self.lock:
            for i, image in zip(ids, x, strict=True):
                self.served[i] = image
                self.held += image.nbytes
            while self.served and (len(self.served) > self.keep or self.held > self.keep_bytes):
                self.held -= self.served.popitem(last=False)[1].nbytes

    def label(self, prediction_id: str, label: str) -> Path | None:
        """Record the label; returns the batch folder when this one completed a batch."""
        if not isinstance(label, str) or not LABEL.match(label) or label in (".", ".."):
            raise FeedbackError(422, "label must be a non-empty name without / \\ or control "
                                     "characters, at most 200 characters")
        with self.lock:
            image = self.served.pop(prediction_id, None)
            if image is None:
                raise FeedbackError(404, f"prediction id {prediction_id[:64]!r} is unknown, already "
                                         f"labelled or rotated out (the last {self.keep} are kept, "
                                         f"within {self.keep_bytes >> 20} MB)")
            self.held -= image.nbytes
            save_png(image, self.pending / label / f"{prediction_id}.png")
            self.labelled += 1
            if self.labelled < self.batch:
                return None
            return self.drop_batch()

    def drop_batch(self) -> Path:
        """Move the pending PNGs into the drop folder as one complete batch."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.drop / f"feedback-{stamp}-{self.dropped:04d}"
        self.drop.mkdir(parents=True, exist_ok=True)
        staging = self.drop / f".{target.name}"  # hidden until whole: the watcher skips dot names
        shutil.move(str(self.pending), staging)
        (staging / self.marker).touch()
        staging.replace(target)
        self.labelled, self.dropped = 0, self.dropped + 1
        return target


def save_png(image: np.ndarray, path: Path) -> None:
    """uint8 (C, H, W) as a lossless PNG (ingest reads back the same pixels)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    tmp.replace(path)
