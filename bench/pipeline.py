"""Orchestration cost: `evergreen run` wall time vs its stages' own compute, its peak memory,
and a rerun with nothing changed against a running Prefect server."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from bench.report import entry, not_run

GOAL_OVERHEAD = 0.15
GOAL_NOOP_S = 5.0
GOAL_RSS_MB = 2048
# --quick: every stage runs, a few epochs each (the test suite's tiny params)
QUICK_PARAMS = {
    "validate": {"min_samples_per_class": 5},
    "train": {"epochs": 4, "batch_size": 32, "augment": {"enabled": False}, "cnn": {"channels": [16, 32]}},
    "compress": {"epochs": 2, "batch_size": 32, "augment": False, "prune": {"ratios": [0.5], "epochs": 1},
                 "quantize": {"variants": ["pruned_50"], "calibration_samples": 64},
                 "select": {"latency_runs": 10, "throughput_batch": 32, "min_speedup": 0.0}},
    "evaluate": {"latency_runs": 10, "throughput_batch": 32, "null_model_max_iter": 200},
    "promote": {"candidate": "teacher", "min_accuracy": 0.5, "min_f1_macro": 0.5,
                "max_latency_ms": 1000.0, "max_latency_ratio": None, "null_alpha": 1.0},
}


def make_workspace(root: Path, quick: bool) -> Path:
    """An empty workspace with the default params.yaml (or the quick one)."""
    from evergreen.config import Config

    root.mkdir(parents=True, exist_ok=True)
    params = Config.model_validate(QUICK_PARAMS if quick else {}).to_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def timed_run(ws: Path, out: Path, env: dict | None = None, timeout: float = 1800,
              args: tuple[str, ...] = ()) -> float:
    """Wall seconds of one `evergreen run [args]` process (bench.timed_run); raises if it fails."""
    env = dict(env or os.environ)
    # Prefect's default 20 s to start its temporary server is too short on a loaded 2-core box
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.timed_run", str(ws), str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.stderr[-1500:]}\nevergreen run exited {proc.returncode} "
                           "(its stderr above)")
    return seconds


def pipeline(quick: bool, scratch: Path) -> dict:
    """pipeline_overhead and peak_rss from one `evergreen run` in a fresh workspace."""
    ws = make_workspace(scratch / "pipeline_ws", quick)
    wall = timed_run(ws, scratch / "run_times.json")
    # the largest process among the finished children: the run itself (or its Prefect server)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    times = json.loads((scratch / "run_times.json").read_text())
    compute = sum(times["stage_seconds"].values()) - times["gx_seconds"]
    overhead = (wall - compute) / wall
    params = "quick params (a few epochs)" if quick else "default params.yaml"
    return {
        "pipeline_overhead": entry(
            overhead, "fraction of wall time", f"evergreen run {wall:.1f} s, stages {compute:.1f} s",
            f"<= {GOAL_OVERHEAD}", overhead <= GOAL_OVERHEAD, wall_seconds=round(wall, 2),
            stage_compute_seconds=round(compute, 2), gx_seconds=round(times["gx_seconds"], 2),
            stage_seconds={k: round(v, 2) for k, v in times["stage_seconds"].items()},
            data="bundled digits", params=params,
            prefect_server="the bench's, running" if os.environ.get("PREFECT_API_URL")
            else "a temporary one the run starts"),
        "peak_rss": entry(rss_mb, "MB", f"evergreen run, {params}", f"< {GOAL_RSS_MB}",
                          rss_mb < GOAL_RSS_MB, measured="max RSS of the largest child process "
                          "(getrusage RUSAGE_CHILDREN)")}


def noop_rerun(quick: bool, scratch: Path) -> dict:
    """Rerun the pipeline benchmark's workspace, nothing changed, against a Prefect server."""
    if quick:
        return {"noop_rerun": not_run(f"<= {GOAL_NOOP_S}", "not in --quick: it starts a Prefect "
                                      "server (15-25 s on 2 cores); run `evergreen bench`", "s")}
    from app.temporary_api import free_port
    from app.ui import Server, start_server, stop_process, wait_until_healthy

    ws = scratch / "pipeline_ws"
    if not (ws / "dvc.lock").exists():
        return {"noop_rerun": not_run(f"<= {GOAL_NOOP_S}", "needs the workspace of the "
                                      "pipeline_overhead benchmark, which did not finish", "s", True)}
    server = Server("127.0.0.1", free_port(), scratch / "prefect")
    proc = start_server(server)
    try:
        started = wait_until_healthy(server, proc)
        env = {**os.environ, "PREFECT_API_URL": server.api_url}
        # the first run registers the flow with the fresh server; the next three are the steady state
        runs = [timed_run(ws, scratch / f"noop_{i}.json", env, timeout=600) for i in range(4)]
    finally:
        stop_process(proc.pid)
    stages = json.loads((scratch / "noop_1.json").read_text())["stage_seconds"]
    value = float(np.median(runs[1:]))
    return {"noop_rerun": entry(value, "s", f"median of 3 reruns; the first, which registers the "
                                f"flow, {runs[0]:.1f} s (server up in {started:.0f} s)",
                                f"<= {GOAL_NOOP_S}", value <= GOAL_NOOP_S,
                                runs_seconds=[round(r, 2) for r in runs],
                                stage_seconds={k: round(v, 2) for k, v in stages.items()})}
