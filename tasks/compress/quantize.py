"""Static int8 with torchao's PT2E flow (X86 quantizer), served by onnxruntime: calibration,
the activation range the CPU needs, and the int8 copy of a variant."""

from __future__ import annotations

import logging
import re

import numpy as np
import torch
from torch import nn

from nets.inputs import normalize
from tasks.compress.variant import Split, Variant


def calibration_batch(train: Split, card: dict, n: int, seed: int) -> torch.Tensor:
    """n normalized train samples, a seeded random choice."""
    order = np.random.default_rng(seed).permutation(len(train[0]))[:n]
    return normalize(torch.from_numpy(train[0][order]), card["mean"], card["std"])


class DropMessage(logging.Filter):
    """A logger filter that drops the records whose message matches `pattern`."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


# what importing torchao logs on every run, about what this pipeline never uses (int8 runs on
# the CPU through the X86 quantizer): CUDA kernels (mxfp8; CUTLASS for sm90a) that a CPU
# torch cannot load, Triton kernels, and torch's deprecation of how torchao registers an Enum
TORCHAO_IMPORT_NOISE = {
    "torchao": DropMessage(r"Failed to load \S*torchao/_C_(mxfp8|cutlass_90a)\S*\.so: "),
    "torchao.kernel.intmm": DropMessage(r"Warning: Detected no triton, "),
    "torch.utils._pytree": DropMessage(r"<enum '\w+'> is an Enum subclass and is now natively "
                                       r"supported by torch\.compile"),
}


def quiet_torchao_import() -> None:
    """Silence torchao's expected import-time warnings; any other warning still shows."""
    for name, drop in TORCHAO_IMPORT_NOISE.items():
        logging.getLogger(name).addFilter(drop)  # addFilter skips a filter already there


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_vnni") or caps.get("avx_vnni"))


def resolve_reduce_range(choice: str | bool) -> tuple[bool, str]:
    """(activations in 7 bits?, why): compress.quantize.reduce_range, or for auto, 7 bits on a
    CPU without VNNI. There onnxruntime multiplies uint8 activations by int8 weights with
    VPMADDUBSW, whose 16-bit pair sums saturate past 127 x 127 x 2; torchao's X86 quantizer
    gives the same advice."""
    if choice != "auto":
        return bool(choice), "compress.quantize.reduce_range"
    if has_vnni():
        return False, "VNNI on this CPU: full 8-bit activations"
    return True, "no VNNI on this CPU: 7-bit activations, else onnxruntime's u8s8 kernels saturate"


def quantize_int8(model: nn.Module, calibration: torch.Tensor, reduce_range: bool = False
                  ) -> nn.Module:
    """Static int8 with the PT2E flow (torchao): per-channel int8 weights, uint8 activations
    (0..127 with `reduce_range`).

    Returns the converted graph (quantize/dequantize around float ops); onnxruntime fuses
    those into int8 kernels once exported.
    """
    quiet_torchao_import()
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
    batch = torch.export.Dim("batch")
    captured = torch.export.export(model.eval(), (calibration[:2],),
                                   dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for chunk in calibration.split(64):
            prepared(chunk)
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)  # .eval() as on any model (dropout: identity)
    converted.eval()  # the patched method returns None, not the model
    return converted


def int8_variant(source: Variant, calibration: torch.Tensor,
                 reduce_range: tuple[bool, str] = (False, "compress.quantize.reduce_range")
                 ) -> Variant:
    reduced, why = reduce_range
    card = {**source.card, "format": "onnx", "compression": {
        "method": f"{source.method}+int8" if source.method != "none" else "int8",
        "source": source.name, "source_compression": source.card.get("compression", {}),
        "quantization": {"tool": "torchao pt2e", "quantizer": "X86InductorQuantizer",
                         "weights": "int8 per channel",
                         "activations": f"uint8 per tensor, 0..{127 if reduced else 255}",
                         "activations_why": why, "calibration_samples": len(calibration)}}}
    model = quantize_int8(source.model, calibration, reduced)
    return Variant(f"{source.name}_int8", model, card, int8=True)
