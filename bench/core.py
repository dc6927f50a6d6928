"""`evergreen bench`: every benchmark group in its own process, one table, reports/bench.json.

A group that fails or times out becomes error entries; the others still run. Groups run
in this order because later ones use the pipeline group's workspace (its champion,
compression report, and finally a new batch for warm-vs-scratch retraining).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# group -> (module:function, the benchmarks it reports, seconds allowed in quick / full mode);
# the limits are a safety net for a hung group on a loaded machine, not the expected times
GROUPS = {
    "pipeline": ("bench.pipeline:pipeline", ("pipeline_overhead", "peak_rss"), (900, 3600)),
    "noop_rerun": ("bench.pipeline:noop_rerun", ("noop_rerun",), (120, 1800)),
    "compression": ("bench.collected:compression", ("compression_latency_ratio", "compression_size_ratio",
                                                    "compression_accuracy_drop"), (120, 120)),
    "distillation": ("bench.collected:distillation", ("distillation_gain",), (300, 1800)),
    "inference": ("bench.inference:inference", ("inference_batch1_p50", "inference_batch1_p95",
                                                "inference_batch256_throughput"), (600, 1800)),
    "serving": ("bench.serving:serving", ("serving_batched_vs_naive_32",
                                          "serving_saturation_vs_offline",
                                          "serving_reload_failures",
                                          "serving_bad_requests_not_4xx"), (420, 1200)),
    "train_throughput": ("bench.training:train_throughput", ("train_throughput_vs_plain_loop",),
                         (600, 3600)),
    "streaming": ("bench.streaming:streaming", ("stream_vs_memory_digits",
                                                "stream_vs_memory_gtsrb64"), (600, 2400)),
    "time_to_accuracy": ("bench.training:time_to_accuracy", ("time_to_98_vs_reference",), (600, 5400)),
    "ddp": ("bench.collected:ddp", ("ddp_2x1_vs_1x2",), (600, 1800)),
    "ingest": ("bench.collected:ingest", ("ingest_throughput", "validate_70k"), (600, 1800)),
    "decode": ("bench.photos:decode", ("decode_vs_plain_pillow",), (300, 900)),
    "warm_vs_scratch": ("bench.collected:warm_vs_scratch", ("warm_vs_scratch", "warm_old_test_drop"),
                        (900, 3600)),
    "gan": ("bench.collected:gan", ("gan_distance_ratio",), (120, 120)),
    "gtsrb": ("bench.gtsrb:gtsrb", ("gtsrb_official_accuracy", "gtsrb_run_minutes", "gtsrb_time_to_97",
                                   "gtsrb_compression_speedup", "gtsrb_compression_size_ratio",
                                   "gtsrb_compression_drop"), (120, 5400)),
}


def run_group(name: str, quick: bool, scratch: Path, workspace: Path) -> dict:
    """Run one group in a child process; its entries, or error entries naming what failed."""
    from bench.report import not_run

    target, names, limits = GROUPS[name]
    out = scratch / f"{name}.result.json"
    cmd = [sys.executable, "-m", "bench.core", name, str(scratch), str(workspace), str(out)]
    cmd += ["--quick"] if quick else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limits[0 if quick else 1])
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text())
        why = (proc.stderr.strip() or f"exit code {proc.returncode}")[-2000:]
    except subprocess.TimeoutExpired:
        why = f"timed out after {limits[0 if quick else 1]} s"
    return {n: not_run(None, f"{target}: {why}", error=True) for n in names}


def run_all(workspace: Path, quick: bool, groups: list[str] | None = None, progress=None) -> dict:
    """Every group (or the named ones), in order, in a scratch folder removed afterwards."""
    from bench.report import table

    benchmarks, started = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evergreen-bench-") as tmp:
        for name in groups or GROUPS:
            t0 = time.perf_counter()
            benchmarks.update(run_group(name, quick, Path(tmp), workspace))
            if progress:
                progress(f"{name}: {time.perf_counter() - t0:.0f} s")
    return {"benchmarks": benchmarks, "quick": quick, "machine": machine(),
            "seconds": round(time.perf_counter() - started, 1), "table": table(benchmarks)}


def machine() -> dict:
    """What the figures were measured on: they are ratios, but load and cores matter."""
    import platform

    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                  .splitlines() if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def child(argv: list[str]) -> None:
    """In the group's own process: run it and write its entries as JSON."""
    import importlib

    name, scratch, workspace, out = argv[:4]
    module, func = GROUPS[name][0].split(":")
    fn = getattr(importlib.import_module(module), func)
    args = (Path(scratch), Path(workspace)) if name == "gan" else (Path(scratch),)
    result = fn("--quick" in argv, *args)
    Path(out).write_text(json.dumps(result, default=float))


if __name__ == "__main__":
    child(sys.argv[1:])
