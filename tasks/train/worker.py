"""A DDP worker, one per process, started by torch's elastic launcher (tasks.train.launcher).

`python -m tasks.train.worker --job DIR` runs `main`: it joins the process group, the leader
(the lowest rank that can read the job folder, so node 0 even without a shared filesystem)
shares the config, every rank opens the data from its own store (the job's data folder, or
`--data WORKSPACE` on a node that pulled it) and checks it is the job's, all ranks run
`tasks.train.loop.fit` reading their share of every global batch (tasks.train.feed), and the
leader alone writes checkpoints and the result. No sample crosses the process group.
EVERGREEN_FAULT_INJECT kills a rank mid-epoch (tests of the elastic restart).

Rules, so that N processes train the same model as one:
- `train.batch_size` is the GLOBAL batch; each rank takes a contiguous 1/N slice of it
  (the same seeded permutation on every rank), and its loss is weighted so that DDP's
  gradient average equals the global batch's mean gradient. Hence the learning rate needs
  no scaling with the world size (the effective batch never changes).
- BatchNorm: with `sync_batchnorm` it normalizes with the global batch's statistics (torch's
  SyncBatchNorm on GPU, `CpuSyncBatchNorm` (tasks/train/sync_batchnorm.py) on CPU, where
  torch's refuses to run) and the weights match one process's to ~1e-6. That costs a
  blocking all-reduce per BatchNorm layer in forward and in backward, which halves CPU
  throughput on a small net, so the default is DDP's usual behaviour: each rank normalizes
  with its own slice, and the running statistics are rank 0's (DDP broadcasts them).
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
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from evergreen.config import TrainConfig
from evergreen.errors import EvergreenError
from tasks.train.augment import Augment
from tasks.train.launcher import threads_per_rank
from tasks.train.loop import fit
from tasks.train.loopback import LOOPBACK_ENV, bind_stores_to_loopback
from tasks.train.losses import cross_entropy_loss
from tasks.train.model import build_teacher, teacher_card
from tasks.train.replica import Replica, resolve_backend
from tasks.train.settings import FitSettings

log = logging.getLogger("evergreen.distributed")
FAULT_ENV = "EVERGREEN_FAULT_INJECT"  # "RANK:EPOCH": that rank kills itself mid-epoch (tests)


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
        raise EvergreenError("no rank can read the job folder: start node 0 through the train stage "
                           "(evergreen), and the other nodes with the launcher alone")
    gpu = device.type == "cuda"
    return Replica(rank, world, leader, device, sync_batchnorm, amp=gpu, channels_last=gpu)


def read_job(job_dir: Path) -> dict:
    """The job the train stage wrote (job.json): the config, and where the data is."""
    return json.loads((job_dir / "job.json").read_text())


def open_data(job: dict, data_root: Path | None, replica: Replica) -> dict:
    """This rank's view of the splits, from its own store: the job's data folder (node 0, or a
    shared folder) or `--data` (a workspace this node pulled with `dvc pull`). Its content must
    be the job's; nothing but the job's config came through the process group."""
    from tasks.data.index import open_splits, splits_sha256

    root = data_root or Path(job["data"]["root"])
    splits = open_splits(root, ("train", "val"))
    if splits_sha256(splits) != job["data"]["sha256"]:
        raise EvergreenError(f"rank {replica.rank}: the data under {root} is not the job's (split "
                             f"index {job['data']['sha256'][:12]}); `dvc pull` node 0's data "
                             "version into that workspace, or pass --data with the right one")
    return splits


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


def run_worker(replica: Replica, job: dict, data: dict) -> dict | None:
    """Fit this rank's share; the leader returns the result (card, history, throughput)."""
    cfg = TrainConfig.model_validate(job["train"])
    augment = Augment(**job["augment"]) if job.get("augment") else None
    classes, norm = job["classes"], tuple(job["norm"])
    train, val = data["train"], data["val"]
    settings = FitSettings.from_train(cfg, augment)
    replica.amp = replica.amp and cfg.precision != "fp32"
    settings.threads = threads_per_rank(cfg.threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    in_shape = tuple(int(d) for d in train[0].shape[1:])
    model, options = build_teacher(cfg, in_shape, len(classes), cfg.seed)
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
    card = teacher_card(cfg, options, in_shape, classes, norm, replica.world)
    return {"card": card, "history": history, "model": model,
            "throughput": {"images": images, "seconds": seconds, "world_size": replica.world}}


def write_result(out: Path, result: dict) -> None:
    """The leader's result for the launcher: the weights (safetensors) and the rest as JSON."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in result.pop("model").state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "result.json").write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    """`python -m tasks.train.worker`: join the job, fit this rank's share, the leader writes."""
    parser = argparse.ArgumentParser(description="An Evergreen DDP worker (start it with torchrun).")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--job", type=Path, help="job folder written by the train stage (node 0)")
    parser.add_argument("--data", type=Path, help="this node's copy of the workspace (its "
                        "data/processed and data/batches, e.g. from `dvc pull`); by default the "
                        "job's own")
    args = parser.parse_args(argv)
    replica = join_job(resolve_backend(args.backend), args.job)
    logging.basicConfig(level=logging.INFO if replica.leader else logging.WARNING,
                        format=f"[rank {replica.rank}] %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("evergreen.data").setLevel(logging.INFO)  # every rank names its shards
    job = replica.share(read_job(args.job) if replica.leader else None)
    replica.sync_batchnorm = job["train"]["distributed"]["sync_batchnorm"]
    result = run_worker(replica, job, open_data(job, args.data, replica))
    if result is not None:
        write_result(args.job / "out", result)
    dist.barrier()  # a leader that dies while writing makes the agent restart everyone
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
