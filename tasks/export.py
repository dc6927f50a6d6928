"""Export: a model to ONNX (torch.export-based exporter), checked against PyTorch in onnxruntime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evergreen.errors import EvergreenError

log = logging.getLogger("evergreen.export")
PARITY_ATOL = 1e-4  # max |p_onnx - p_torch| over class probabilities, fp32


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], path: Path) -> Path:
    """Write `model` as ONNX with a dynamic batch axis: input "x" (N, C, H, W) -> "logits"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # "torchvision is not installed" warnings: its detection ops are not ours to export
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    example = (torch.zeros(2, *in_shape),)  # batch 2: a batch of 1 would be specialized away
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not the user's concern
        program = torch.onnx.export(model, example, dynamo=True, verbose=False,
                                    input_names=["x"], output_names=["logits"],
                                    dynamic_shapes=({0: "batch"},))
    tmp = path.with_name(f".{path.name}.tmp")
    program.save(str(tmp))
    strip_debug_info(tmp)
    tmp.replace(path)
    return path


def strip_debug_info(path: Path) -> None:
    """Drop the exporter's per-node metadata (source stack traces): bytes a served model never reads."""
    import onnx

    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(proto, str(path))


@torch.no_grad()
def parity(model: nn.Module, onnx_model: nn.Module, x: torch.Tensor) -> float:
    """Max absolute difference between the two models' class probabilities on `x`."""
    model.eval()
    expected = torch.softmax(model(x), dim=1).numpy()
    got = torch.softmax(onnx_model(x), dim=1).numpy()
    return float(np.abs(expected - got).max())


def check_parity(model: nn.Module, onnx_model: nn.Module, x: torch.Tensor, where: Path,
                 atol: float = PARITY_ATOL) -> float:
    """Parity of an fp32 export; an export that changes the answers is an error."""
    diff = parity(model, onnx_model, x)
    if diff > atol:
        raise EvergreenError(f"{where}: ONNX probabilities differ from PyTorch's by {diff:.2e} "
                             f"(> {atol:g}); the export is not used")
    return diff
