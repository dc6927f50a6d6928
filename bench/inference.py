"""Serving speed of the pipeline benchmark's champion: PyTorch eager vs ONNX Runtime vs
torch.compile, batch-1 latency (1 thread) and batch-256 throughput (the default threads)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench.report import entry, not_run


def latency(model, x1: torch.Tensor, runs: int) -> tuple[float, float]:
    """p50, p95 in ms of single-image calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(x1)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def throughput(model, xb: torch.Tensor, reps: int) -> float:
    model(xb)
    start = time.perf_counter()
    for _ in range(reps):
        model(xb)
    return reps * len(xb) / (time.perf_counter() - start)


def runtimes(model_dir: Path, compiled: bool) -> dict:
    """name -> (callable for batch 1, callable for big batches), each under no_grad."""
    from nets.io import load_model
    from nets.runtime import OnnxModel

    eager, _ = load_model(model_dir)
    eager.eval()
    out = {"eager": (eager, eager), "onnxruntime": (OnnxModel(model_dir / "model.onnx", 1),
                                                   OnnxModel(model_dir / "model.onnx", 0))}
    if compiled:
        fast = torch.compile(eager)
        out["torch.compile"] = (fast, fast)
    return out


@torch.no_grad()
def inference(quick: bool, scratch: Path) -> dict:
    from nets.io import read_card

    model_dir = scratch / "pipeline_ws" / "models" / "selected"
    if not (model_dir / "model.onnx").exists():
        reason = "needs the champion of the pipeline_overhead benchmark's run, which did not finish"
        return {f"inference_{k}": not_run(None, reason, u, True) for k, u in
                (("batch1_p50", "ms"), ("batch1_p95", "ms"), ("batch256_throughput", "images/s"))}
    card = read_card(model_dir)
    runs, reps = (100, 3) if quick else (1000, 20)
    x1, xb = torch.randn(1, *card["in_shape"]), torch.randn(256, *card["in_shape"])
    threads, out = torch.get_num_threads(), {}
    # --quick leaves torch.compile out: compiling takes 20 s to minutes on 2 busy cores
    for name, (one, many) in runtimes(model_dir, compiled=not quick).items():
        torch.set_num_threads(1)
        start = time.perf_counter()
        one(x1)  # torch.compile compiles here
        warm = time.perf_counter() - start
        latency(one, x1, 20)
        p50, p95 = latency(one, x1, runs)
        torch.set_num_threads(threads)
        out[name] = {"p50_ms": round(p50, 4), "p95_ms": round(p95, 4),
                     "batch256_images_per_s": round(throughput(many, xb, reps), 1),
                     "first_call_s": round(warm, 3)}
    return rows(out, card)


def rows(out: dict, card: dict) -> dict:
    """Served figure (ONNX Runtime, what `evergreen predict` runs) with the others as anchor."""
    def anchor(key: str, fmt: str) -> str:
        return ", ".join(f"{n} {fmt.format(v[key])}" for n, v in out.items() if n != "onnxruntime")

    ort = out["onnxruntime"]
    model = f"champion {card['arch']} ({card.get('compression', {}).get('method', 'none')})"
    return {"inference_batch1_p50": entry(ort["p50_ms"], "ms", anchor("p50_ms", "{:.3f} ms"), None,
                                          None, runtimes=out, model=model, threads=1),
            "inference_batch1_p95": entry(ort["p95_ms"], "ms", anchor("p95_ms", "{:.3f} ms"), None,
                                          None),
            "inference_batch256_throughput": entry(
                ort["batch256_images_per_s"], "images/s",
                anchor("batch256_images_per_s", "{:.0f}/s"), None, None,
                threads=torch.get_num_threads())}
