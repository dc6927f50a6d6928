"""Shared fixtures: tiny deterministic data, a small-params workspace, one Prefect harness."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import yaml

if TYPE_CHECKING:
    from evergreen.workspace import Workspace

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "evergreen")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

# Small but real: every stage runs a few epochs on the bundled digits (seconds each);
# the teacher is the candidate, as 4 epochs give it a clear margin over the null model.
TINY_PARAMS = {
    "validate": {"min_samples_per_class": 5},
    "train": {"epochs": 4, "batch_size": 32, "augment": {"enabled": False},
              "cnn": {"channels": [16, 32]}},
    # every variant is built here (lazy stops at the first that fits the budget)
    "compress": {"epochs": 3, "batch_size": 32, "augment": False, "build": "all",
                 "prune": {"ratios": [0.5], "epochs": 1},
                 "quantize": {"variants": ["pruned_50"], "calibration_samples": 64},
                 # a speed-up measured on a busy machine must not decide what tests select
                 "select": {"latency_runs": 10, "throughput_batch": 32, "min_speedup": 0.0}},
    "evaluate": {"latency_runs": 10, "throughput_batch": 32, "null_model_max_iter": 200},
    # latency depends on machine load; its gate has its own tests (test_promote.py). A test
    # split of a few dozen images cannot make beating the null model significant: ahead is enough
    "promote": {"candidate": "teacher", "min_accuracy": 0.5, "min_f1_macro": 0.5,
                "champion_tolerance": 0.05, "max_latency_ms": 1000.0, "max_latency_ratio": None,
                "null_alpha": 1.0},
}


@pytest.fixture(scope="session")
def digits():
    from tasks.ingest import load_digits_batch

    return load_digits_batch()


@pytest.fixture
def tiny_batch(digits):
    """20 samples per class (200 in all), real digits."""
    from tasks.ingest import Batch

    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:20] for c in range(10)])
    return Batch(digits.x[keep], digits.labels[keep], [digits.sources[i] for i in keep])


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny nets run fastest on one thread, and a busy 2-core box makes more threads spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tiny_batch):
    """tiny_batch -> preprocess -> (train, val, classes, norm)."""
    from evergreen.config import PreprocessConfig
    from tasks.ingest import content_hash, metadata_table
    from tasks.preprocess import preprocess

    meta = metadata_table(tiny_batch, [content_hash(img) for img in tiny_batch.x], "b0")
    p = preprocess(tiny_batch.x, tiny_batch.labels, meta, PreprocessConfig())
    return p.splits["train"], p.splits["val"], p.classes, (p.mean, p.std)


def write_params(root: Path, params: dict) -> Path:
    from evergreen.config import Config

    full = Config.model_validate(params).to_params()
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(full, sort_keys=False))
    return path


@pytest.fixture
def workspace(tmp_path):
    """An empty workspace folder whose params.yaml makes every stage quick."""
    from evergreen.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    return Workspace(root)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_png_folder(root: Path, x: np.ndarray, labels: np.ndarray) -> Path:
    """root/<label>/<i>.png from uint8 (N, C, H, W) images."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(x, labels, strict=False)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(arr).save(folder / f"{i:05d}.png")
    return root


def write_idx_pair(folder: Path, x: np.ndarray, labels: np.ndarray, gz: bool = False):
    """MNIST-format train-images-idx3-ubyte / train-labels-idx1-ubyte (optionally .gz)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, _, h, w = x.shape
    images = struct.pack(">4B3I", 0, 0, 8, 3, n, h, w) + x[:, 0].tobytes()
    labs = struct.pack(">4BI", 0, 0, 8, 1, n) + labels.astype(np.uint8).tobytes()
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    img_path = folder / f"train-images-idx3-ubyte{suffix}"
    lab_path = folder / f"train-labels-idx1-ubyte{suffix}"
    img_path.write_bytes(pack(images))
    lab_path.write_bytes(pack(labs))
    return img_path, lab_path


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under folder (a batch is a folder of shards beside its table), by path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def copy_workspace(ws: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of a (module-scoped) prepared workspace, for a test that changes it."""
    from evergreen.workspace import Workspace

    shutil.copytree(ws.root, tmp_path / "ws")
    return Workspace(tmp_path / "ws")


def fail_registry_writes(monkeypatch) -> None:
    """Replacing models/registry.json fails as on a full disk; other files are written."""
    real_replace = os.replace

    def broken_replace(src, dst):
        if str(dst).endswith("registry.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("evergreen.workspace.os.replace", broken_replace)


HOLD_LOCK = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": "here", "command": sys.argv[2],
                          "since": sys.argv[3]}).encode(), 0)
print("held", flush=True)
time.sleep(120)
"""


def hold_workspace_lock(ws: Workspace, command: str, since: str = "2026-11-29T10:00:00+00:00"):
    """A live process holding the workspace lock as `command` (kill it to release)."""
    import subprocess
    import sys

    ws.state.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ws.state / "lock"), command, since],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def default_sigint() -> None:
    """preexec_fn: the child takes SIGINT as a terminal's Ctrl-C, even when this test run was
    started in the background (`nohup`, `&`), which makes the tree inherit SIGINT ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def lock_is_free(root: Path) -> bool:
    """Whether no process holds the workspace lock (the file itself stays: tests/evergreen/test_lock.py)."""
    import fcntl

    path = root / ".evergreen" / "lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
