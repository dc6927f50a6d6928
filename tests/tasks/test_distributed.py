"""Distributed training: DDP through torch's elastic launcher, on CPU with gloo.

Each launch starts fresh Python processes (seconds), so the runs are tiny: a 2-block CNN
with BatchNorm on 130 digits, 2-3 epochs.
"""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evergreen.config import DistributedConfig, TrainConfig
from evergreen.errors import EvergreenError, TrainingCrashedError
from tasks.data.index import splits_sha256
from tasks.train import train_model
from tasks.train.launcher import launcher_command, launcher_env, threads_per_rank, write_job
from tasks.train.replica import Replica
from tasks.train.sync_batchnorm import CpuSyncBatchNorm, convert_to_cpu_sync_bn
from tasks.train.worker import FAULT_ENV

# dropout 0: the masks are per rank and cannot match one process's (documented); two streams
# pinned: one process and two ranks then read the same global order
BASE = {"epochs": 2, "batch_size": 32, "dropout": 0.0, "threads": 1, "augment": {"enabled": False},
        "cnn": {"channels": [8, 16]}, "feed": {"streams": 2}}


def config(**distributed) -> TrainConfig:
    """BASE with train.distributed set; synced BatchNorm unless said otherwise (exact results)."""
    epochs = distributed.pop("epochs", BASE["epochs"])
    distributed = {"sync_batchnorm": True, **distributed}
    return TrainConfig.model_validate({**BASE, "epochs": epochs, "distributed": distributed})


def relative_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest ||a - b|| / ||a|| over the float tensors of two state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(((sa[k] - sb[k]).double().norm() / sa[k].double().norm().clamp_min(1e-12)).item()
               for k in sa if sa[k].is_floating_point())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- plain functions, no processes ------------------------------------------------------

@pytest.mark.parametrize("n, world", [(32, 2), (41, 2), (7, 3), (1, 2)])
def test_parts_tile_the_global_batch(n, world):
    parts = [Replica(rank=r, world=world).part(n) for r in range(world)]
    covered = [i for p in parts for i in range(n)[p]]
    assert covered == list(range(n))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_single_replica_is_the_identity():
    replica, model = Replica(), torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    assert replica.prepare(model) is model and replica.wrap(model) is model
    assert replica.sum([1.5, 2.0]) == [1.5, 2.0] and replica.share({"a": 1}) == {"a": 1}
    assert replica.leader and replica.part(10) == slice(0, 10)


def test_cpu_sync_batchnorm_keeps_state_and_matches_batchnorm_alone():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    bn.running_mean.normal_()
    model = convert_to_cpu_sync_bn(torch.nn.Sequential(bn))
    assert isinstance(model[0], CpuSyncBatchNorm)
    torch.testing.assert_close(model[0].running_mean, bn.running_mean)
    x = torch.randn(8, 4, 3, 3)
    # no process group: it is plain BatchNorm (the process-group path is tested end to end)
    torch.testing.assert_close(model(x), torch.nn.functional.batch_norm(
        x, None, None, bn.weight, bn.bias, training=True))


def test_launcher_command_single_and_multi_node():
    single = launcher_command(DistributedConfig(nproc_per_node=2, max_restarts=1), None)
    assert single[1:3] == ["-m", "tasks.train.loopback"] and "--standalone" in single
    assert single[single.index("--nproc_per_node") + 1] == "2"
    assert single[single.index("--max_restarts") + 1] == "1"
    assert single[-4:] == ["-m", "tasks.train.worker", "--backend", "gloo"]

    node1 = launcher_command(DistributedConfig(nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500"),
                             None)
    assert "--standalone" not in node1 and node1[node1.index("--nnodes") + 1] == "2"
    assert node1[node1.index("--rdzv_endpoint") + 1] == "10.0.0.1:29500"
    assert "is_host=false" in node1


def test_threads_per_rank_shares_the_cores():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_rank(0, 1) == cores
    assert threads_per_rank(0, 2 * cores) == 1
    assert threads_per_rank(3, 2) == 3


@pytest.mark.parametrize("bad, key", [({"node_rank": 2, "nnodes": 2}, "node_rank 2"),
                                      ({"rdzv_endpoint": "localhost"}, "HOST:PORT"),
                                      ({"backend": "mpi"}, "backend")])
def test_distributed_config_errors_name_the_field(bad, key):
    from evergreen.config import parse_config
    from evergreen.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        parse_config({"train": {"distributed": bad}})


# --- launched jobs -----------------------------------------------------------------------

@pytest.mark.parametrize("augment", [False, True])
def test_two_processes_match_one_process(data, augment):
    """2 ranks x B/2 == 1 process x B: same data order, SyncBatchNorm, weighted loss."""
    train, val, classes, norm = data
    base = {**BASE, "augment": {"enabled": augment}}
    single = TrainConfig.model_validate(base)
    double = TrainConfig.model_validate({**base, "distributed": {"nproc_per_node": 2,
                                                                  "sync_batchnorm": True}})

    one, one_card, one_history = train_model(train, val, classes, norm, single)
    two, two_card, two_history = train_model(train, val, classes, norm, double)

    assert (one_card["training"], two_card["training"]) == ({"world_size": 1}, {"world_size": 2})
    assert relative_gap(one, two) < 1e-5
    assert [r["epoch"] for r in two_history] == [1, 2]
    for a, b in zip(one_history, two_history):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)


def shard_lines(output: str, rank: int) -> set[str]:
    """The shards rank `rank` says it read in epoch 1."""
    import re

    found = re.search(rf"rank {rank} of 2, epoch 1: \d+ samples from shards ([\w\- ]+)", output)
    assert found, output
    return set(found.group(1).split())


def test_two_launchers_form_one_multi_node_job(data, tmp_path, caplog):
    """nnodes=2 on one machine: node 0 runs the train stage's launcher on its workspace, node 1
    the bare launcher on its own copy of the data (as `dvc pull` makes it: `--data`). Each rank
    reads its own shards; per-rank BatchNorm (the default), so the model is not one process's:
    check it learns."""
    import shutil

    from tasks.data.index import open_splits, write_arrays

    train, val, classes, norm = data
    write_arrays(tmp_path / "node0", {"train": train, "val": val}, max_bytes=20 * train[0][0].nbytes)
    shutil.copytree(tmp_path / "node0", tmp_path / "node1")
    splits = open_splits(tmp_path / "node0", ("train", "val"))
    caplog.set_level(logging.INFO, logger="evergreen")
    node = {"nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}", "sync_batchnorm": False}
    command = launcher_command(config(**node, node_rank=1).distributed, None)
    node1 = subprocess.Popen(command + ["--data", str(tmp_path / "node1")], env=launcher_env(1),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        model, card, history = train_model(splits["train"], splits["val"], classes, norm,
                                           config(**node, node_rank=0), root=tmp_path / "node0")
        output = node1.communicate(timeout=120)[0]
    finally:
        node1.kill()
    assert node1.returncode == 0, output
    assert card["training"]["world_size"] == 2 and len(history) == 2
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    read = [shard_lines(caplog.text + output, r) for r in (0, 1)]
    assert len(read[0] | read[1]) == len(splits["train"][0].run_lengths())
    assert len(read[0] & read[1]) <= 1  # two streams: one boundary, one shard read in halves


def test_a_node_with_other_data_is_refused(data, tmp_path):
    from tasks.data.index import open_splits, write_arrays
    from tasks.train.worker import open_data

    train, val, _, _ = data
    write_arrays(tmp_path / "node0", {"train": train, "val": val})
    write_arrays(tmp_path / "stale", {"train": (train[0][1:], train[1][1:]), "val": val})
    job = {"data": {"root": str(tmp_path / "node0"), "sha256": splits_sha256(
        open_splits(tmp_path / "node0", ("train", "val")))}}
    assert len(open_data(job, None, Replica())["train"][1]) == len(train[1])
    with pytest.raises(EvergreenError, match="rank 0: the data under .*stale is not the job's"):
        open_data(job, tmp_path / "stale", Replica())


def test_the_job_ranks_share_holds_no_samples(data, tmp_path):
    """What the leader broadcasts is job.json: config and where the data is, no tensor; the
    samples stay in the shards every rank reads itself."""
    from tasks.data.index import open_splits, write_arrays
    from tasks.train.exchange import skeleton
    from tasks.train.worker import read_job

    train, val, classes, norm = data
    write_arrays(tmp_path / "ws", {"train": train, "val": val})
    splits = open_splits(tmp_path / "ws", ("train", "val"))
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    write_job(job_dir, splits["train"], splits["val"], classes, norm, config(), None, None, "",
              tmp_path / "ws")
    tensors = []
    skeleton(read_job(job_dir), tensors)
    assert tensors == [] and sorted(p.name for p in job_dir.iterdir()) == ["job.json"]


def test_killed_rank_restarts_from_the_epoch_checkpoint(data, tmp_path, monkeypatch, caplog):
    """Rank 1 dies mid-epoch 2; the elastic agent restarts both, they resume from epoch 1."""
    train, val, classes, norm = data
    monkeypatch.setenv(FAULT_ENV, "1:2")
    caplog.set_level(logging.INFO, logger="evergreen")
    ckpt = tmp_path / "train.pt"

    model, card, history = train_model(train, val, classes, norm,
                                       config(nproc_per_node=2, max_restarts=1, epochs=3),
                                       checkpoint=ckpt, checkpoint_key="k")

    assert "injected failure in epoch 2" in caplog.text
    assert "resumed from epoch 1" in caplog.text
    assert [r["epoch"] for r in history] == [1, 2, 3]
    clean, _, clean_history = train_model(train, val, classes, norm, config(epochs=3))
    assert relative_gap(clean, model) < 1e-5
    assert history[-1]["val_acc"] == pytest.approx(clean_history[-1]["val_acc"], abs=1e-6)


NO_PICKLE = """
import os, pickle
if "LOCAL_RANK" in os.environ:  # a DDP worker (the launcher's agent is left alone)
    def refuse(*args, **kwargs):
        raise RuntimeError("pickle is forbidden in this worker")

    class Refused(pickle.Unpickler):
        def load(self):
            refuse()

    pickle.loads = pickle.load = refuse
    pickle.Unpickler = Refused
"""


def test_ranks_exchange_no_pickles(data, tmp_path, monkeypatch, caplog):
    """Every worker has pickle.loads, pickle.load and pickle.Unpickler refusing (a
    sitecustomize on PYTHONPATH); the job, and the checkpoint a restart resumes from, still
    reach rank 1, and the run finishes as an unbroken one."""
    train, val, classes, norm = data
    (tmp_path / "sitecustomize.py").write_text(NO_PICKLE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(FAULT_ENV, "1:2")
    caplog.set_level(logging.INFO, logger="evergreen")

    model, card, history = train_model(train, val, classes, norm,
                                       config(nproc_per_node=2, max_restarts=1, epochs=3),
                                       checkpoint=tmp_path / "train.pt", checkpoint_key="k")

    assert card["training"]["world_size"] == 2
    assert "resumed from epoch 1" in caplog.text and [r["epoch"] for r in history] == [1, 2, 3]
    clean, _, _ = train_model(train, val, classes, norm, config(epochs=3))
    assert relative_gap(clean, model) < 1e-5


def test_a_worker_that_unpickles_fails_under_the_same_guard(tmp_path):
    """The guard is real: the same sitecustomize makes broadcast_object_list's unpickling fail."""
    (tmp_path / "sitecustomize.py").write_text(NO_PICKLE)
    code = "import torch.distributed.distributed_c10d as c, io; c._unpickler(io.BytesIO(b'N.')).load()"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "pickle is forbidden" in done.stderr


def test_failure_without_restarts_is_reported(data, monkeypatch):
    train, val, classes, norm = data
    monkeypatch.setenv(FAULT_ENV, "0:1")
    with pytest.raises(TrainingCrashedError, match="distributed training failed"):
        train_model(train, val, classes, norm, config(nproc_per_node=2, epochs=1))


# --- the GPU path (NCCL, bf16 autocast, channels_last, pinned memory) ---------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_trains_with_nccl(data):
    train, val, classes, norm = data
    nproc = max(1, min(2, torch.cuda.device_count()))
    model, card, history = train_model(train, val, classes, norm,
                                       config(nproc_per_node=nproc, backend="nccl"))
    assert card["training"]["world_size"] == nproc and len(history) == 2
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


LISTENERS = """
import json, os, sys
from pathlib import Path
import psutil, torch.distributed as dist
from tasks.train.worker import join_job

job = Path(sys.argv[1])
replica = join_job("gloo", job)
if replica.rank == 0:  # the agent (our parent) and every worker under it
    agent = psutil.Process(os.getppid())
    addresses = {c.laddr.ip for p in [agent, *agent.children(recursive=True)]
                 for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    (job / "listening.json").write_text(json.dumps(sorted(addresses)))
dist.barrier()
"""


@pytest.mark.parametrize("launcher, loopback_only", [("tasks.train.loopback", True),
                                                     ("torch.distributed.run", False)])
def test_one_machine_job_listens_on_loopback_only(tmp_path, launcher, loopback_only):
    """The launcher the train stage uses on one machine binds every store (the agent's and
    rank 0's) and gloo's sockets to 127.0.0.1; plain torchrun, the control, listens on all
    interfaces, which is what the check would catch."""
    script, job = tmp_path / "listeners.py", tmp_path / "job"
    script.write_text(LISTENERS)
    job.mkdir()
    (job / "job.json").write_text("{}")
    env = {**launcher_env(1, one_machine=True), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", launcher, "--standalone", "--nproc_per_node", "2", str(script), str(job)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    addresses = json.loads((job / "listening.json").read_text())
    assert len(addresses) >= 1
    assert (set(addresses) == {"127.0.0.1"}) == loopback_only, addresses
