"""An exported ONNX model behind the nn.Module interface, run by onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class OnnxModel(nn.Module):
    """Logits (N, classes) from an ONNX file; callable wherever a torch model is."""

    def __init__(self, path: Path, threads: int = 1, spin: bool = True):
        """`spin`: worker threads busy-wait for the next pass (fastest alone; a server whose
        event loop shares the cores turns it off, BENCHMARKS.md issue 20)."""
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # tiny nets at batch 1: one thread avoids the scheduling cost of a thread pool
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no arena: it keeps the largest batch's activations for the session's life (at 64 px and
        # batch 512, 200 MB per model; compress holds several): batch 1 is as fast without it,
        # batch 512 about 10% slower (BENCHMARKS.md, issue 19)
        options.enable_cpu_mem_arena = False
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        """Logits for a float32 array: the serving path, with no torch conversion around it."""
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.run_numpy(inputs))
