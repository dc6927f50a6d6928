"""Faults and hostile files (issue 9): promotion killed at each write, disk and permission
errors, pickles in models/, safe config parsing, Prefect retries resuming, run + retrain.

The SIGKILL, secret-leak and fresh-clone reproduction runs are in test_rel_e2e.py (slow).
"""

import contextlib
import copy
import errno
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from evergreen.config import Config, PromoteConfig
from evergreen.stages import pure_names
from evergreen.workspace import Workspace, read_json, write_json
from mains import call_main
from tests.conftest import TINY_PARAMS

CODE = Path(__file__).resolve().parents[2]

# TINY_PARAMS, leaner still: no pruning, int8 or control student (their own tests cover them)
LEAN = copy.deepcopy(TINY_PARAMS)
LEAN["train"].update(epochs=3, cnn={"channels": [8, 16]})
LEAN["compress"].update(epochs=1, control=False, prune={"ratios": [], "epochs": 0},
                        quantize={"variants": [], "calibration_samples": 16})
# every gate passable, so a promotion can be interrupted (the gates have their own tests)
LAX = {k: v for k, v in {"min_accuracy": 0.0, "min_f1_macro": 0.0, "champion_tolerance": 1.0,
                         "max_class_recall_drop": 1.0, "max_forgetting": 1.0}.items()
       if k in PromoteConfig.model_fields}


def lean_config(**promote) -> Config:
    return Config.model_validate({**LEAN, "promote": {**LEAN["promote"], **LAX, **promote}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A git + DVC workspace where validate..evaluate ran on 300 digits (lean params)."""
    from evergreen import dvcfile
    from tasks.ingest import Batch, dedupe, write_batch
    from tests.conftest import write_params

    ws = Workspace(tmp_path_factory.mktemp("rel") / "ws")
    ws.root.mkdir()
    write_params(ws.root, LEAN)
    dvcfile.init_workspace(ws)
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:30] for c in range(10)])
    batch, hashes, _, _ = dedupe(Batch(digits.x[keep], digits.labels[keep],
                                       [digits.sources[i] for i in keep]), set())
    write_batch(batch, hashes, ws.batches)
    for name in pure_names():
        call_main(name, ws, lean_config())
    return ws


@pytest.fixture
def ws(trained, tmp_path):
    shutil.copytree(trained.root, tmp_path / "ws", symlinks=True)
    return Workspace(tmp_path / "ws")


def passing_metrics(ws: Workspace, candidate: str) -> None:
    """Metrics that pass every gate for `candidate` (far ahead of a null model at 0.5)."""
    metrics = read_json(ws.reports / "metrics.json")
    metrics[candidate].update(accuracy=0.99, f1_macro=0.99, latency_ms_p50=0.5, latency_ms_p95=1.0,
                              vs_null={"champion_only": 0, "challenger_only": 30, "pvalue": 1e-9,
                                       "method": "exact binomial"})
    metrics["null_model"]["accuracy"] = 0.5
    write_json(ws.reports / "metrics.json", metrics)


def promote(ws: Workspace, candidate: str) -> dict:
    return call_main("promote", ws, lean_config(candidate=candidate), run_id="test-run",
                     data_version="data-v", full_params_hash="params-h")


@pytest.fixture
def with_champion(ws):
    """ws with the teacher promoted as v1; the student's metrics pass too."""
    passing_metrics(ws, "teacher")
    assert promote(ws, "teacher")["verdict"] == "promoted"
    passing_metrics(ws, "student")
    return ws


class Killed(BaseException):
    """The process died here: no `except OSError` clean-up runs (unlike a raised OSError)."""


class WriteSteps:
    """Counts the file-system steps of a promotion; dies at step `die_at` (None: never)."""

    def __init__(self, monkeypatch, die_at: int | None = None):
        self.calls: list[str] = []
        self.die_at = die_at
        for owner, name in ((os, "replace"), (os, "fsync"), (shutil, "copy2"),
                            (tempfile, "mkdtemp"), (tempfile, "mkstemp")):
            monkeypatch.setattr(owner, name, self.wrap(name, getattr(owner, name)))

    def wrap(self, name, real):
        def step(*args, **kwargs):
            if len(self.calls) == self.die_at:
                raise Killed(f"killed at step {self.die_at} ({name})")
            self.calls.append(f"{name}({', '.join(Path(str(a)).name for a in args[:2])})")
            return real(*args, **kwargs)
        return step


def registry_summary(ws: Workspace) -> tuple:
    from mains.versions import load_registry

    reg = load_registry(ws.registry)
    return reg["champion"], sorted(reg["versions"]), len(reg["candidates"])


def assert_versions_complete(ws: Workspace) -> None:
    """Every version the registry names is on disk, whole (its model file's hash matches)."""
    from mains.versions import load_registry
    from nets.io import file_sha256, model_file

    for version, info in load_registry(ws.registry)["versions"].items():
        folder = ws.root / info["path"]
        assert folder.is_dir(), f"{version} is referenced but {folder} is missing"
        assert file_sha256(model_file(folder)) == info["sha256"], f"{version} is half-copied"


def test_promotion_killed_at_every_write_step_leaves_old_or_new_state(with_champion, tmp_path,
                                                                      monkeypatch):
    before = registry_summary(with_champion)
    clean = Workspace(tmp_path / "clean")
    shutil.copytree(with_champion.root, clean.root, symlinks=True)
    with monkeypatch.context() as m:
        steps = WriteSteps(m)
        assert promote(clean, "student")["verdict"] == "promoted"
    after = registry_summary(clean)
    assert after[0] == "v2" and after[1] == ["v1", "v2"]
    assert len(steps.calls) >= 4, steps.calls  # copies, fsyncs, renames of version and registry

    for k, step in enumerate(steps.calls):
        crashed = Workspace(tmp_path / f"crash{k}")
        shutil.copytree(with_champion.root, crashed.root, symlinks=True)
        with monkeypatch.context() as m, pytest.raises(Killed):
            WriteSteps(m, die_at=k)
            promote(crashed, "student")
        state = registry_summary(crashed)
        assert state in (before, after), f"killed at step {k} {step}: registry {state}"
        assert_versions_complete(crashed)
        # the next run finishes the job and leaves no debris (temp files, unlisted versions)
        promote(crashed, "student")
        assert registry_summary(crashed)[:2] == after[:2], f"after a kill at step {k} {step}"
        assert sorted(p.name for p in crashed.versions.iterdir()) == ["v1", "v2"]
        assert not list(crashed.models.glob(".registry.json.*"))
        assert_versions_complete(crashed)


# --- disk and permission errors -----------------------------------------------------------

def fail_writes_under(monkeypatch, folder: Path, code: int) -> None:
    """Every open-for-writing below `folder` fails with `code` (ENOSPC, EACCES), as a full disk or
    a read-only folder would; works as root, where chmod does not stop writes."""
    import builtins

    folder = str(folder.resolve())

    def blocked(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(folder)

    def guard(real, writing):
        def opener(path, *args, **kwargs):
            if blocked(path) and writing(*args, **kwargs):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, *args, **kwargs)
        return opener

    by_mode = lambda mode="r", *a, **k: any(c in k.get("mode", mode) for c in "wax+")  # noqa: E731
    by_flags = lambda flags, *a, **k: bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))  # noqa: E731
    monkeypatch.setattr(builtins, "open", guard(builtins.open, by_mode))
    monkeypatch.setattr(io, "open", guard(io.open, by_mode))
    monkeypatch.setattr(os, "open", guard(os.open, by_flags))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("folder, stage, errno_, named, message", [
    ("reports", "evaluate", errno.ENOSPC, "reports", "No space left on device"),  # metrics kept
    ("models", "train", errno.EACCES, "models/teacher", "Permission denied"),  # teacher kept
])
def test_a_failed_write_names_the_path_and_keeps_what_was_there(ws, monkeypatch, capsys, folder,
                                                                stage, errno_, named, message):
    before = snapshot(ws.root / folder)
    fail_writes_under(monkeypatch, ws.root / folder, errno_)
    code = main(["--workspace", str(ws.root), "stage", stage])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(ws.root / named) in err and message in err
    monkeypatch.undo()
    assert snapshot(ws.root / folder) == before  # every file as it was, no temp files


def test_disk_full_on_data_keeps_the_dataset(ws, digits, tmp_path, monkeypatch, capsys):
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[30:40] for c in range(10)])
    np.savez(tmp_path / "more.npz", x=digits.x[keep], y=digits.labels[keep].astype(int))
    before = snapshot(ws.root / "data")
    fail_writes_under(monkeypatch, ws.root / "data", errno.ENOSPC)
    code = main(["--workspace", str(ws.root), "ingest", str(tmp_path / "more.npz")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(ws.root / "data") in err and "No space left on device" in err
    monkeypatch.undo()
    assert snapshot(ws.root / "data") == before


def test_os_error_outside_the_write_helper_is_named_not_a_traceback(ws, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(ws.reports / "metrics.json"))

    monkeypatch.setattr("mains.evaluate.write_json", refuse)
    assert main(["--workspace", str(ws.root), "stage", "evaluate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evergreen stage: error: ") and "Traceback" not in err
    assert f"{ws.reports / 'metrics.json'}: Permission denied (EACCES)" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; the injected "
                    "EACCES tests above cover this case")
def test_chmod_read_only_reports_folder(ws, capsys):
    before = snapshot(ws.reports)
    folders = [ws.reports, *[p for p in ws.reports.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o555)
    try:
        code = main(["--workspace", str(ws.root), "stage", "evaluate"])
    finally:
        for folder in folders:
            folder.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 1 and str(ws.reports) in err and "Permission denied" in err
    assert snapshot(ws.reports) == before


# --- hostile files --------------------------------------------------------------------------

@contextlib.contextmanager
def logged(name: str):
    """The messages `name` logs; Prefect's logging set-up can keep them from pytest's caplog."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(name)
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Payload:
    """Unpickling this runs a shell command that creates `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_in_place_of_the_champion_weights_is_refused_unrun(with_champion, tmp_path, capsys):
    import pickle

    marker = tmp_path / "pwned"
    weights = with_champion.versions / "v1" / "model.safetensors"
    weights.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    # a promoted teacher keeps its ONNX export, which predict serves: without it, the weights
    (with_champion.versions / "v1" / "model.onnx").unlink(missing_ok=True)
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    code = main(["--workspace", str(with_champion.root), "predict", str(png)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(weights) in err and "pickle" in err and "refused" in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["teacher", "version"])
def test_model_pt_with_a_payload_is_never_loaded(with_champion, tmp_path, where):
    import torch

    from evergreen.errors import BadInputError
    from nets.io import load_model

    marker = tmp_path / "pwned"
    folder = with_champion.model_dir("teacher") if where == "teacher" else with_champion.versions / "v1"
    torch.save({"state_dict": Payload(marker)}, folder / "model.pt")
    load_model(folder)  # the safetensors weights are read; model.pt is ignored
    (folder / "model.safetensors").unlink()
    with pytest.raises(BadInputError, match=r"model\.pt found there but refused: pickled"):
        load_model(folder)
    assert not marker.exists()


def test_checkpoint_with_a_payload_is_refused_and_training_starts_fresh(ws, tmp_path):
    import torch

    from mains.processed import load_split
    from tasks.train import train_model

    marker = tmp_path / "pwned"
    ckpt = ws.state / "checkpoints" / "train.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": "k", "epoch": 2, "model": Payload(marker)}, ckpt)
    meta = read_json(ws.processed / "meta.json")
    cfg = lean_config()
    with logged("evergreen.train") as lines:
        _, history = train_model(load_split(ws, "train"), load_split(ws, "val"), meta["classes"],
                                 (meta["mean"], meta["std"]), cfg.train, checkpoint=ckpt,
                                 checkpoint_key="k")[1:]
    assert not marker.exists()
    assert any("not a plain-tensor checkpoint, refused" in line for line in lines)
    assert [row["epoch"] for row in history] == [1, 2, 3]  # from scratch


def test_yaml_python_tags_in_params_are_refused_unrun(workspace, tmp_path, capsys):
    marker = tmp_path / "pwned"
    workspace.params.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["--workspace", str(workspace.root), "run"]) == 2
    assert "params.yaml" in capsys.readouterr().err
    assert not marker.exists()


# --- Prefect retries, concurrent writers ------------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_prefect_retry_of_train_resumes_from_the_epoch_checkpoint(ws, monkeypatch):
    """The first attempt fails after epoch 1's checkpoint (an I/O error); the retry resumes."""
    import tasks.train.checkpoint as checkpoint_mod
    from flows.training import train_task


    reference = (ws.reports / "plots" / "train.csv").read_text()  # the uninterrupted run's epochs
    real, calls = checkpoint_mod.save_checkpoint, []

    def save_then_fail_once(path, state):
        real(path, state)
        calls.append(state["epoch"])
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", save_then_fail_once)
    with logged("evergreen.train") as lines:
        summary = train_task(ws, lean_config(), rerun=True, commit=False)
    assert summary["ran"] and calls == [1, 2, 3]  # epoch 1 was not trained twice
    assert "train: resumed from epoch 1" in lines
    assert (ws.reports / "plots" / "train.csv").read_text() == reference  # identical epochs


@pytest.fixture
def lock_held_by(workspace):
    """A lock held by a live process (a sleeping child) running the named command."""
    from tests.conftest import hold_workspace_lock

    children = []

    def hold(command: str):
        children.append(hold_workspace_lock(workspace, command))

    yield hold
    for child in children:
        child.kill()
        child.wait()


@pytest.mark.parametrize("holder, second", [("evergreen run", "retrain"),
                                            ("evergreen retrain", "run")])
def test_run_and_retrain_exclude_each_other(workspace, lock_held_by, holder, second, capsys):
    lock_held_by(holder)
    assert main(["--workspace", str(workspace.root), second]) == 75
    assert f"workspace busy: {holder}" in capsys.readouterr().err
    assert not (workspace.root / "data").exists() and not workspace.registry.exists()
