"""Distributed training, the launcher side: the train stage starts torch's elastic launcher
(torchrun) on this node and waits for the DDP workers (tasks.train.worker) it runs.

`launch` writes the job folder (data and config), runs `python -m torch.distributed.run ... -m
tasks.train.worker --job DIR` (through `tasks.train.loopback` on one machine), and rebuilds the
leader's model from the result. The rules that make N processes train as one are in
tasks/train/worker.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from evergreen.errors import TrainingCrashedError
from tasks.train.loopback import loopback_interface
from tasks.train.replica import resolve_backend

log = logging.getLogger("evergreen.distributed")
REPO_ROOT = Path(__file__).resolve().parents[2]  # where `-m tasks.train.worker` imports from


def launcher_env(threads: int, one_machine: bool = False) -> dict[str, str]:
    """The launcher's environment: threads per worker, and a fresh store per restart.

    With the rendezvous TCPStore shared with the workers (torch's default since 2.4), restarted
    workers read the dead attempt's gloo addresses from it and fail to connect; opting out
    gives every rendezvous round its own store. Every node's launcher needs this setting.
    On one machine gloo connects over the loopback interface (unless GLOO_SOCKET_IFNAME is set).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    if one_machine and (loopback := loopback_interface()):
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    return env


def launcher_command(dcfg, job_dir: Path | None) -> list[str]:
    """`python -m torch.distributed.run ... -m tasks.train.worker` for train.distributed; on one
    machine `tasks.train.loopback` runs it with the rendezvous listening on 127.0.0.1 only."""
    launcher = "tasks.train.loopback" if dcfg.nnodes == 1 else "torch.distributed.run"
    cmd = [sys.executable, "-m", launcher, "--nproc_per_node", str(dcfg.nproc_per_node),
           "--max_restarts", str(dcfg.max_restarts)]
    if dcfg.nnodes == 1:
        cmd += ["--standalone"]  # rendezvous on a free local port
    else:
        is_host = "true" if dcfg.node_rank == 0 else "false"
        cmd += ["--nnodes", str(dcfg.nnodes), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", dcfg.rdzv_endpoint, "--rdzv_conf", f"is_host={is_host}"]
    cmd += ["-m", "tasks.train.worker", "--backend", resolve_backend(dcfg.backend)]
    if job_dir is not None:
        cmd += ["--job", str(job_dir)]
    return cmd


def data_source(job_dir: Path, train, val, root: Path | None) -> dict:
    """Where every rank reads the splits: the workspace under `root` (or, for splits held in
    memory, shards written to the job folder), and their content hash, which each rank checks."""
    from tasks.data import Images
    from tasks.data.index import open_splits, splits_sha256, write_arrays

    if root is None or not isinstance(train[0], Images):
        root = job_dir
        write_arrays(root, {"train": train, "val": val})
    return {"root": str(root), "sha256": splits_sha256(open_splits(root, ("train", "val")))}


def write_job(job_dir: Path, train, val, classes, norm, cfg, augment, checkpoint,
              checkpoint_key, root: Path | None = None) -> None:
    """The job folder (job.json) the leader reads: the config and where the data is."""
    job = {"train": cfg.model_dump(mode="json"), "data": data_source(job_dir, train, val, root),
           "augment": augment.as_dict() if augment is not None else None,
           "classes": list(classes), "norm": [list(norm[0]), list(norm[1])],
           "checkpoint": str(checkpoint) if checkpoint else None, "checkpoint_key": checkpoint_key}
    (job_dir / "job.json").write_text(json.dumps(job))


def run_launcher(cmd: list[str], env: dict[str, str]) -> None:
    """Run the elastic launcher, streaming its output to the log; raise with the tail on failure."""
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO_ROOT) as proc:
        for line in proc.stdout:
            if line.strip():
                tail.append(line.rstrip())
                log.info("%s", line.rstrip())
    if proc.returncode != 0:
        shown = "\n  ".join(tail)
        raise TrainingCrashedError(f"distributed training failed (launcher exit "
                                   f"{proc.returncode}):\n  {shown}")


def launch(train, val, classes, norm, cfg, augment=None, checkpoint: Path | None = None,
           checkpoint_key: str = "", root: Path | None = None):
    """Train with train.distributed.world_size processes; returns (model, card, history) like
    train_model. `cfg` is resolved (tasks.train.adapt.resolve_train), `augment` its augmentation."""
    from tasks.train.model import build_teacher

    result = run_job(train, val, classes, norm, cfg, augment, checkpoint, checkpoint_key, root)
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    model = build_teacher(cfg, in_shape, len(classes))[0]
    model.load_state_dict(result["state"])
    return model.eval(), result["card"], result["history"]


def run_job(train, val, classes, norm, cfg, augment=None, checkpoint: Path | None = None,
            checkpoint_key: str = "", root: Path | None = None) -> dict:
    """Start the launcher on this node and wait; the leader's result (state, card, history, throughput)."""
    from safetensors.torch import load_file

    dcfg = cfg.distributed
    with tempfile.TemporaryDirectory(prefix="evergreen-ddp-") as tmp:
        job_dir = Path(tmp)
        write_job(job_dir, train, val, classes, norm, cfg, augment, checkpoint, checkpoint_key, root)
        log.info("launching %d process(es) on this node (world size %d, nnodes %d, max_restarts %d)",
                 dcfg.nproc_per_node, dcfg.world_size, dcfg.nnodes, dcfg.max_restarts)
        run_launcher(launcher_command(dcfg, job_dir),
                     launcher_env(threads_per_rank(cfg.threads, dcfg.nproc_per_node), dcfg.nnodes == 1))
        result = json.loads((job_dir / "out" / "result.json").read_text())
        result["state"] = load_file(str(job_dir / "out" / "model.safetensors"))
    return result


def threads_per_rank(threads: int, nproc_per_node: int) -> int:
    """train.threads if set, else this machine's cores shared among its processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return threads or max(1, cores // nproc_per_node)
