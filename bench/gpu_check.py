"""GPU path check: DDP over NCCL, bf16 autocast, channels_last, and the streaming data path
(the splits written as .npy shards, every rank reading its share through a DataLoader into
pinned memory, non-blocking copies, normalization and augmentation on the GPU); prints images/s.

Run it on a CUDA machine (one process per GPU); record the figures in BENCHMARKS.md with
the machine named. Without CUDA it is skipped with a note; `--backend gloo` runs the same job
on CPU, to smoke-test the script.

    python -m bench.gpu_check [--nproc N] [--samples 60000] [--size 28] [--epochs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from evergreen.config import TrainConfig


def synthetic(samples: int, size: int, classes: int = 10, seed: int = 0):
    """MNIST-shaped uint8 images whose mean brightness encodes the label (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, samples).astype(np.int64)
    x = rng.integers(0, 128, (samples, 1, size, size)).astype(np.int64) + (y * 12)[:, None, None, None]
    split = samples * 9 // 10
    x = x.clip(0, 255).astype(np.uint8)
    return (x[:split], y[:split]), (x[split:], y[split:]), [str(c) for c in range(classes)], ([0.4], [0.3])


def check(nproc: int, backend: str, samples: int, size: int, epochs: int, batch_size: int) -> dict:
    from tasks.train.launcher import run_job

    cfg = TrainConfig.model_validate({"epochs": epochs, "batch_size": batch_size,
                                      "early_stopping": {"patience": epochs + 1},
                                      "distributed": {"nproc_per_node": nproc, "backend": backend}})
    result = run_job(*synthetic(samples, size), cfg)
    t = result["throughput"]
    history = result["history"]
    return {"world_size": t["world_size"], "backend": backend, "images": t["images"],
            "seconds": round(t["seconds"], 2), "images_per_s": round(t["images"] / t["seconds"], 1),
            "images_per_s_per_process": round(t["images"] / t["seconds"] / t["world_size"], 1),
            "final_val_acc": history[-1]["val_acc"],
            "finite": all(bool(torch.isfinite(v).all()) for v in result["state"].values()
                          if v.is_floating_point())}


def machine() -> str:
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()} x {', '.join(sorted(names))}, torch {torch.__version__}"
    return f"CPU only ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=0, help="processes (default: one per GPU)")
    parser.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.backend == "nccl" and not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device on this machine (`--backend gloo` runs the same "
              "streaming job on CPU as a smoke test)")
        return
    nproc = args.nproc or (torch.cuda.device_count() if args.backend == "nccl" else 2)
    counts = sorted({1, nproc})
    runs = [check(n, args.backend, args.samples, args.size, args.epochs, args.batch_size) for n in counts]
    report = {"machine": machine(), "runs": runs}
    if args.json:
        print(json.dumps(report))
        return
    print(report["machine"])
    for r in runs:
        print(f"{r['world_size']} x {r['backend']}: {r['images_per_s']:.0f} images/s "
              f"({r['images_per_s_per_process']:.0f} per process), {r['seconds']} s, "
              f"val_acc {r['final_val_acc']:.3f}, finite weights: {r['finite']}")


if __name__ == "__main__":
    main()
