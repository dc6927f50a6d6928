"""Distributed training: DDP workers started by torch's elastic launcher (torchrun).

The train stage calls `launch`, which starts `python -m torch.distributed.run ... -m
tasks.distributed --job DIR` (through `tasks.loopback` on one machine) and waits. Every
worker runs `main`: it joins the process group, the leader (the lowest rank that can read
the job folder, so node 0 even without a shared filesystem) shares the data and config,
all ranks run `tasks.train.fit` on their part of every global batch, and the leader alone
writes checkpoints and the result.

Rules, so that N processes train the same model as one:
- `train.batch_size` is the GLOBAL batch; each rank takes a contiguous 1/N slice of it
  (the same seeded permutation on every rank), and its loss is weighted so that DDP's
  gradient average equals the global batch's mean gradient. Hence the learning rate needs
  no scaling with the world size (the effective batch never changes).
- BatchNorm: with `sync_batchnorm` it normalizes with the global batch's statistics (torch's
  SyncBatchNorm on GPU, `CpuSyncBatchNorm` (tasks/replica.py) on CPU, where torch's refuses to run) and
  the weights match one process's to ~1e-6. That costs a blocking all-reduce per BatchNorm
  layer in forward and in backward, which halves CPU throughput on a small net, so the
  default is DDP's usual behaviour: each rank normalizes with its own slice, and the running
  statistics are rank 0's (DDP broadcasts them).
- Augmentation draws its random warps for the whole global batch from the shared
  generator and applies each rank's slice, so data order and augmentations are the same
  as in one process. Dropout masks come from a per-rank, per-epoch seed (they cannot match
  one process's; they are reproducible, so a restarted worker repeats its epoch exactly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from tasks.loopback import LOOPBACK_ENV, bind_stores_to_loopback, loopback_interface
from tasks.replica import Replica, resolve_backend

log = logging.getLogger("evergreen.distributed")
FAULT_ENV = "EVERGREEN_FAULT_INJECT"  # "RANK:EPOCH": that rank kills itself mid-epoch (tests)


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
    """`python -m torch.distributed.run ... -m tasks.distributed` for train.distributed; on one
    machine `tasks.loopback` runs it with the rendezvous listening on 127.0.0.1 only."""
    launcher = "tasks.loopback" if dcfg.nnodes == 1 else "torch.distributed.run"
    cmd = [sys.executable, "-m", launcher, "--nproc_per_node", str(dcfg.nproc_per_node),
           "--max_restarts", str(dcfg.max_restarts)]
    if dcfg.nnodes == 1:
        cmd += ["--standalone"]  # rendezvous on a free local port
    else:
        is_host = "true" if dcfg.node_rank == 0 else "false"
        cmd += ["--nnodes", str(dcfg.nnodes), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", dcfg.rdzv_endpoint, "--rdzv_conf", f"is_host={is_host}"]
    cmd += ["-m", "tasks.distributed", "--backend", resolve_backend(dcfg.backend)]
    if job_dir is not None:
        cmd += ["--job", str(job_dir)]
    return cmd


def write_job(job_dir: Path, train, val, classes, norm, cfg, augment, checkpoint,
              checkpoint_key) -> None:
    np.savez(job_dir / "data.npz", train_x=train[0], train_y=train[1], val_x=val[0], val_y=val[1])
    job = {"train": cfg.model_dump(mode="json"),
           "augment": augment.as_dict() if augment is not None else None,
           "classes": list(classes), "norm": [list(norm[0]), list(norm[1])],
           "checkpoint": str(checkpoint) if checkpoint else None, "checkpoint_key": checkpoint_key}
    (job_dir / "job.json").write_text(json.dumps(job))


def run_launcher(cmd: list[str], env: dict[str, str]) -> None:
    """Run the elastic launcher, streaming its output to the log; raise with the tail on failure."""
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=Path(__file__).resolve().parent.parent) as proc:
        for line in proc.stdout:
            if line.strip():
                tail.append(line.rstrip())
                log.info("%s", line.rstrip())
    if proc.returncode != 0:
        shown = "\n  ".join(tail)
        raise RuntimeError(f"distributed training failed (launcher exit {proc.returncode}):\n  {shown}")


def launch(train, val, classes, norm, cfg, augment=None, checkpoint: Path | None = None,
           checkpoint_key: str = ""):
    """Train with train.distributed.world_size processes; returns (model, card, history) like
    train_model. `cfg` is resolved (tasks.adapt.resolve_train), `augment` its augmentation."""
    from nets import build_model
    from tasks.train import model_options

    result = run_job(train, val, classes, norm, cfg, augment, checkpoint, checkpoint_key)
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    model = build_model(cfg.model, in_shape, len(classes), **model_options(cfg, in_shape))
    model.load_state_dict(result["state"])
    return model.eval(), result["card"], result["history"]


def run_job(train, val, classes, norm, cfg, augment=None, checkpoint: Path | None = None,
            checkpoint_key: str = "") -> dict:
    """Start the launcher on this node and wait; the leader's result (state, card, history, throughput)."""
    from safetensors.torch import load_file

    dcfg = cfg.distributed
    with tempfile.TemporaryDirectory(prefix="evergreen-ddp-") as tmp:
        job_dir = Path(tmp)
        write_job(job_dir, train, val, classes, norm, cfg, augment, checkpoint, checkpoint_key)
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


# --- the worker side (one per process) -------------------------------------------------

def join_job(backend: str, job_dir: Path | None, sync_batchnorm: bool = False) -> Replica:
    """Join the process group torchrun set up; elect the leader (lowest rank holding the job)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if os.environ.get(LOOPBACK_ENV):
        bind_stores_to_loopback()
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    has_job = job_dir is not None and (job_dir / "job.json").exists()
    flag = torch.tensor([rank if has_job else world], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    leader = int(flag.item())
    if leader == world:
        raise RuntimeError("no rank can read the job folder: start node 0 through the train stage "
                           "(evergreen), and the other nodes with the launcher alone")
    gpu = device.type == "cuda"
    return Replica(rank, world, leader, device, sync_batchnorm, amp=gpu, channels_last=gpu)


def read_job(job_dir: Path) -> dict:
    job = json.loads((job_dir / "job.json").read_text())
    with np.load(job_dir / "data.npz") as npz:
        job["data"] = {k: npz[k] for k in npz.files}
    return job


def counting_loss(loss_fn, replica: Replica, steps_per_epoch: int, counter: list[int]):
    """Count trained samples; with EVERGREEN_FAULT_INJECT=RANK:EPOCH, kill that rank mid-epoch
    on the first attempt (TORCHELASTIC_RESTART_COUNT 0) to exercise elastic restarts."""
    fault = os.environ.get(FAULT_ENV, "")
    kill_rank, kill_epoch = (int(v) for v in fault.split(":")) if fault else (-1, 0)
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    kill_at = (kill_epoch - 1) * steps_per_epoch + steps_per_epoch // 2 + 1

    def loss(logits, y, x):
        counter[0] += 1
        counter[1] += len(x)
        if first_attempt and replica.rank == kill_rank and counter[0] == kill_at:
            log.warning("rank %d: injected failure in epoch %d", replica.rank, kill_epoch)
            os.kill(os.getpid(), signal.SIGKILL)
        return loss_fn(logits, y, x)

    return loss


def run_worker(replica: Replica, job: dict) -> dict | None:
    """Fit this rank's share; the leader returns the result (card, history, throughput)."""
    from evergreen.config import TrainConfig
    from nets import build_model
    from tasks.augment import Augment
    from tasks.train import FitSettings, cross_entropy_loss, fit, model_options

    cfg = TrainConfig.model_validate(job["train"])
    augment = Augment(**job["augment"]) if job.get("augment") else None
    data, classes, norm = job["data"], job["classes"], tuple(job["norm"])
    train, val = (data["train_x"], data["train_y"]), (data["val_x"], data["val_y"])
    settings = FitSettings.from_train(cfg, augment)
    replica.amp = replica.amp and cfg.precision != "fp32"
    settings.threads = threads_per_rank(cfg.threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    options = model_options(cfg, in_shape)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, in_shape, len(classes), **options)
    counter = [0, 0]
    loss_fn = counting_loss(cross_entropy_loss, replica, -(-len(train[0]) // cfg.batch_size), counter)
    start = time.perf_counter()
    model, history = fit(model, train, val, norm, settings, loss_fn=loss_fn, replica=replica,
                         checkpoint=Path(job["checkpoint"]) if job["checkpoint"] else None,
                         checkpoint_key=job["checkpoint_key"])
    seconds = time.perf_counter() - start
    images = replica.sum([float(counter[1])])[0]
    log.info("trained %d images in %.1f s on %d processes: %.0f images/s (%.0f per process)",
             images, seconds, replica.world, images / seconds, images / seconds / replica.world)
    if not replica.leader:
        return None
    card = {"arch": cfg.model, "options": options, "in_shape": list(in_shape), "classes": classes,
            "mean": norm[0], "std": norm[1], "training": {"world_size": replica.world}}
    return {"card": card, "history": history, "model": model,
            "throughput": {"images": images, "seconds": seconds, "world_size": replica.world}}


def write_result(out: Path, result: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in result.pop("model").state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "result.json").write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An Evergreen DDP worker (start it with torchrun).")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--job", type=Path, help="job folder written by the train stage (node 0)")
    args = parser.parse_args(argv)
    replica = join_job(resolve_backend(args.backend), args.job)
    logging.basicConfig(level=logging.INFO if replica.leader else logging.WARNING,
                        format=f"[rank {replica.rank}] %(name)s: %(message)s", stream=sys.stdout)
    job = replica.share(read_job(args.job) if replica.leader else None)
    replica.sync_batchnorm = job["train"]["distributed"]["sync_batchnorm"]
    result = run_worker(replica, job)
    if result is not None:
        write_result(args.job / "out", result)
    dist.barrier()  # a leader that dies while writing makes the agent restart everyone
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
