"""Every variant exported to ONNX (fp32 parity checked) and measured there, side by side: test
metrics, validation accuracy, size and batch-1 latency in the runtime it is served from."""

from __future__ import annotations

from pathlib import Path

import torch

from evergreen.config import SelectConfig
from tasks.compress.variant import Split, Variant


def save_variant(variant: Variant, out_dir: Path, check: torch.Tensor) -> dict:
    """Write the ONNX export, card and (fp32) safetensors; check fp32 parity. Returns export info."""
    from nets.io import CARD, ONNX, load_onnx, save_model
    from tasks.export import check_parity, export_onnx, parity

    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(variant.model, tuple(variant.card["in_shape"]), out_dir / ONNX)
    served = load_onnx(out_dir)
    if variant.int8:  # no fp32 weights to keep; compare with the PT2E graph it came from
        from evergreen.workspace import write_json

        write_json(out_dir / CARD, variant.card)
        return {"onnx_max_abs_diff": parity(variant.model, served, check)}
    save_model(variant.model, variant.card, out_dir)
    return {"onnx_max_abs_diff": check_parity(variant.model, served, check, out_dir / ONNX)}


def measure_variants(variants: dict[str, Variant], out: Path, val: Split, test: Split,
                     cfg: SelectConfig) -> dict[str, dict]:
    """Per variant: test metrics, val accuracy (what selection uses), size, and latency of the
    ONNX export (the runtime it is served from) measured side by side with the others."""
    from nets.io import ONNX, load_onnx
    from tasks.evaluate import classification_metrics, measure_latencies, predict_proba

    in_shape = tuple(next(iter(variants.values())).card["in_shape"])
    served = {name: load_onnx(out / name) for name in variants}
    speed = measure_latencies(served, in_shape, cfg)
    eager = measure_latencies({n: v.model for n, v in variants.items() if not v.int8}, in_shape,
                              cfg)
    rows = {}
    for name, variant in variants.items():
        card = variant.card
        metrics = classification_metrics(test[1], predict_proba(served[name], card, test[0]),
                                         card["classes"])
        val_acc = float((predict_proba(served[name], card, val[0]).argmax(1) == val[1]).mean())
        rows[name] = {"name": name, "method": variant.method, "accuracy": metrics["accuracy"],
                      "f1_macro": metrics["f1_macro"], **speed[name],
                      "size_bytes": (out / name / ONNX).stat().st_size,
                      "params": None if variant.int8 else sum(p.numel() for p in variant.model.parameters()),
                      "val_accuracy": val_acc, "runtime": "onnxruntime", "int8": variant.int8,
                      "torch_latency_ms_p50": eager.get(name, {}).get("latency_ms_p50")}
    return rows
