"""The champion as served: its card, its ONNX export in onnxruntime (torch where it has
none), uint8 images in, class probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ServedModel:
    """One registry version, loaded whole before it serves its first request."""

    version: str
    card: dict
    model: object  # nets.runtime.OnnxModel, or a torch module for a champion without export
    runtime: str

    @classmethod
    def load(cls, version: str, model_dir: Path, threads: int, spin: bool = False) -> ServedModel:
        """`spin`: onnxruntime's idle threads busy-wait (its default, fastest alone); off for a
        server, whose event loop would lose the cores to them."""
        from nets.io import ONNX, load_model, read_card
        from nets.runtime import OnnxModel

        if (model_dir / ONNX).exists():
            return cls(version, read_card(model_dir), OnnxModel(model_dir / ONNX, threads, spin),
                       "onnxruntime")
        model, card = load_model(model_dir)
        return cls(version, card, model, "torch")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        c, h, w = self.card["in_shape"]
        return int(c), int(h), int(w)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for uint8 images (N, C, H, W)."""
        mean = np.asarray(self.card["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.card["std"], np.float32).reshape(1, -1, 1, 1)
        inputs = (x.astype(np.float32) / 255.0 - mean) / std
        if self.runtime == "onnxruntime":
            logits = self.model.run_numpy(np.ascontiguousarray(inputs))
        else:
            import torch

            with torch.no_grad():
                logits = self.model(torch.from_numpy(inputs)).numpy()
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)
