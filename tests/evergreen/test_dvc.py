"""dvc.yaml drives the same stage functions: `dvc repro` in a fresh workspace runs them all."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evergreen import dvcfile
from evergreen.workspace import Workspace
from tasks.ingest import dedupe, write_batch
from tests.conftest import TINY_PARAMS, tree_bytes, write_params

BIN = Path(sys.executable).parent


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, text=True,
                          capture_output=True, timeout=900)


@pytest.mark.slow  # every stage through `dvc repro` and the CLI
def test_dvc_repro_runs_the_pipeline_then_nothing(tmp_path, tiny_batch):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    # a budget any pruned variant fits: compress.build lazy then trains no student, and its
    # DVC output holds the note saying why
    select = {**TINY_PARAMS["compress"]["select"], "max_accuracy_drop": 1.0, "max_size_ratio": None}
    write_params(ws.root, {**TINY_PARAMS, "preprocess": {"test_fraction": 0.25},
                           "compress": {**TINY_PARAMS["compress"], "build": "lazy",
                                        "select": select}})
    dvcfile.init_workspace(ws)
    batch, hashes, _, _ = dedupe(tiny_batch, set())
    write_batch(batch, hashes, ws.batches)
    dvcfile.track(ws.root, "data/batches")

    first = dvc(ws.root, "repro")
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("validate", "preprocess", "train", "compress", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    metrics = yaml.safe_load((ws.reports / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["null_model"]["accuracy"] > 0
    assert not (ws.model_dir("student") / "model.safetensors").exists()
    assert "already fit the budget" in (ws.model_dir("student") / "skipped.json").read_text()
    compression = yaml.safe_load((ws.reports / "compression.json").read_text())
    assert "distilled" in compression["skipped"]
    assert {r["name"] for r in compression["variants"]} == {"teacher", "pruned_50", "pruned_50_int8"}
    assert "student" not in metrics and "teacher" in metrics

    again = dvc(ws.root, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout
    assert dvc(ws.root, "status").stdout.strip() == "Data and pipelines are up to date."
    assert dvcfile.stale_stages(ws.root) == set()  # the flow's one status call agrees

    params = yaml.safe_load(ws.params.read_text())
    params["train"]["epochs"] += 1
    ws.params.write_text(yaml.safe_dump(params))
    assert dvcfile.stale_stages(ws.root) == {"train"}


def test_workspace_dvc_yaml_has_no_code_deps_outside_it(tmp_path):
    text = dvcfile.dvc_yaml(tmp_path)
    stages = yaml.safe_load(text)["stages"]
    assert all(not d.startswith(("tasks/", "nets")) for s in stages.values() for d in s["deps"])
    assert list(stages) == ["validate", "preprocess", "train", "compress", "evaluate"]


def test_dvc_push_and_pull_through_a_local_remote(tmp_path, tiny_batch):
    import shutil

    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    dvcfile.init_workspace(ws)
    batch, hashes, _, _ = dedupe(tiny_batch, set())
    write_batch(batch, hashes, ws.batches)
    dvcfile.track(ws.root, "data/batches")
    before = tree_bytes(ws.batches)

    assert dvc(ws.root, "remote", "add", "-d", "store", str(tmp_path / "remote")).returncode == 0
    pushed = dvc(ws.root, "push")
    assert pushed.returncode == 0, pushed.stderr
    shutil.rmtree(ws.batches)
    shutil.rmtree(ws.root / ".dvc" / "cache")
    pulled = dvc(ws.root, "pull", "data/batches.dvc")  # the stages never ran here
    assert pulled.returncode == 0, pulled.stderr
    assert tree_bytes(ws.batches) == before
