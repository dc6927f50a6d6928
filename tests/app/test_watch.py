"""`evergreen watch DIR`: complete drops (marker or quiet period), ingest, retrain, events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.watch import DONE, EVENT, FAILED, DropTracker, resource_id, watch_folder
from evergreen.workspace import workspace_lock
from tests.conftest import TINY_PARAMS, write_params, write_png_folder


def chunk(digits, k: int, per_class: int = 15):
    """The k-th disjoint, class-balanced slice of digits."""
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[k * per_class:(k + 1) * per_class]
                           for c in range(10)])
    return digits.x[keep], digits.labels[keep]


def write_npz(path: Path, x, labels) -> Path:
    np.savez(path, x=x[:, 0], y=labels.astype(int))
    return path


def set_watch(ws, **watch) -> None:
    write_params(ws.root, {**TINY_PARAMS, "watch": {"poll_seconds": 0.2, "retrain": "local", **watch}})


@pytest.fixture
def retrains(monkeypatch):
    """Record in-process retrains (workspace and the batches present) instead of training."""
    calls = []

    def record(ws, overrides=None):
        calls.append(sorted(p.stem for p in ws.batches.glob("*.csv")))
        return {"status": "retrained", "message": "recorded"}

    monkeypatch.setattr("app.watch.retrain_here", record)
    return calls


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_growing_file_is_not_taken_until_quiet(tmp_path):
    now = [0.0]
    tracker = DropTracker(tmp_path, "_READY", quiet_s=10.0, clock=lambda: now[0])
    growing = tmp_path / "batch.npz"
    growing.write_bytes(b"x" * 100)
    assert tracker.ready() == []  # first sight starts the quiet period
    for _ in range(3):  # a write every 6 s: never 10 s quiet
        now[0] += 6.0
        with growing.open("ab") as fh:
            fh.write(b"x" * 100)
        assert tracker.ready() == []
    now[0] += 9.9
    assert tracker.ready() == []
    now[0] += 0.2
    assert tracker.ready() == [growing]


def test_a_change_notification_restarts_the_quiet_period(tmp_path):
    now = [0.0]
    tracker = DropTracker(tmp_path, "_READY", quiet_s=5.0, clock=lambda: now[0])
    (tmp_path / "b1").mkdir()
    (tmp_path / "b1" / "a.png").write_bytes(b"1")
    assert tracker.ready() == []
    now[0] += 4.0
    tracker.touch([str(tmp_path / "b1" / "a.png"), "/elsewhere/x"])  # same size, same mtime
    now[0] += 4.0
    assert tracker.ready() == []
    now[0] += 1.0
    assert tracker.ready() == [tmp_path / "b1"]


def test_markers_complete_drops_and_are_not_drops(tmp_path):
    tracker = DropTracker(tmp_path, "_READY", quiet_s=3600.0)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "_READY").touch()
    (tmp_path / "file.npz").write_bytes(b"1")
    (tmp_path / "file.npz_READY").touch()
    (tmp_path / "unmarked.npz").write_bytes(b"1")
    (tmp_path / ".done").mkdir()
    (tmp_path / "_READY").touch()  # a marker without its drop is no drop
    assert tracker.ready() == [tmp_path / "file.npz", tmp_path / "folder"]
    assert tracker.drops() == [tmp_path / "file.npz", tmp_path / "folder", tmp_path / "unmarked.npz"]


def test_watch_once_ingests_marked_drops_and_retrains_once(workspace, tmp_path, digits, retrains):
    set_watch(workspace, quiet_seconds=3600.0)  # only markers complete a drop here
    drops = tmp_path / "drops"
    write_png_folder(drops / "pngs", *chunk(digits, 0))
    (drops / "pngs" / "_READY").touch()
    write_npz(drops / "more.npz", *chunk(digits, 1))
    (drops / "more.npz_READY").touch()
    assert main(["--workspace", str(workspace.root), "watch", str(drops), "--once"]) == 0
    shards = sorted(p.stem for p in workspace.batches.glob("*.csv"))
    assert len(shards) == 2
    assert retrains == [shards]  # both drops, one retrain
    assert sorted(p.name for p in (drops / DONE).iterdir()) == ["more.npz", "pngs"]
    assert sorted(p.name for p in drops.iterdir()) == [DONE]  # markers gone, nothing left
    assert (workspace.root / "data" / "batches.dvc").exists()
    # a restart finds nothing to do: the drops are not ingested again
    assert main(["--workspace", str(workspace.root), "watch", str(drops), "--once"]) == 0
    assert len(retrains) == 1


def test_bad_drop_is_quarantined_and_the_watcher_goes_on(workspace, tmp_path, digits, retrains):
    set_watch(workspace, quiet_seconds=1.0)
    drops, stop = tmp_path / "drops", threading.Event()
    drops.mkdir()
    result = {}
    watcher = threading.Thread(target=lambda: result.update(s=watch_folder(workspace, drops,
                                                                           stop_event=stop)))
    watcher.start()
    try:
        (drops / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
        (drops / "broken.npz_READY").touch()
        wait_for(lambda: (drops / FAILED / "broken.npz").exists(), 60, "the bad drop to be refused")
        write_npz(drops / "good.npz", *chunk(digits, 2))  # no marker: taken once quiet for 1 s
        wait_for(lambda: (drops / DONE / "good.npz").exists(), 60, "the good drop to land")
    finally:
        stop.set()
        watcher.join(30)
    summary = result["s"]
    assert summary.failed == ["broken.npz"] and len(summary.landed) == 1
    assert len(retrains) == 1
    reason = (drops / FAILED / "broken.npz.reason.txt").read_text()
    assert "broken.npz" in reason and "npz" in reason
    assert any(workspace.quarantine.iterdir())  # ingest kept a copy with its reason


def test_a_busy_workspace_queues_the_drop(workspace, tmp_path, digits, retrains):
    set_watch(workspace, quiet_seconds=3600.0, lock_wait_seconds=60.0)
    drops = tmp_path / "drops"
    drops.mkdir()
    write_npz(drops / "b.npz", *chunk(digits, 3))
    (drops / "b.npz_READY").touch()
    with workspace_lock(workspace, "a training run", 0):
        watcher = threading.Thread(target=watch_folder, args=(workspace, drops, True))
        watcher.start()
        time.sleep(2.0)
        assert (drops / "b.npz").exists() and not list(workspace.batches.glob("*.csv"))
    watcher.join(60)
    assert not watcher.is_alive()
    assert (drops / DONE / "b.npz").exists() and len(retrains) == 1


def test_watch_refuses_a_missing_folder_or_the_workspace(workspace, tmp_path, capsys):
    assert main(["--workspace", str(workspace.root), "watch", str(tmp_path / "nope"), "--once"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["--workspace", str(workspace.root), "watch", str(tmp_path), "--once"]) == 2
    assert "holds the workspace" in capsys.readouterr().err


def test_with_a_prefect_server_the_watcher_emits_the_event(prefect_harness, workspace, tmp_path,
                                                            digits, retrains):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    set_watch(workspace, retrain="auto", quiet_seconds=3600.0)  # auto + PREFECT_API_URL -> event
    drops = tmp_path / "drops"
    drops.mkdir()
    write_npz(drops / "b.npz", *chunk(digits, 4))
    (drops / "b.npz_READY").touch()
    summary = watch_folder(workspace, drops, once=True)
    assert retrains == [] and len(summary.events) == 1 and len(summary.landed) == 1
    found = []

    def received() -> bool:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[EVENT]),
                                                  resource=EventResourceFilter(id=[resource_id(workspace)])),
                                      limit=10)  # the server refuses the default 100
        found[:] = [e for e in page.events if str(e.id) == summary.events[0]]
        return bool(found)

    wait_for(received, 30, "the server to store the event")
    assert found[0].payload["batch_id"] == summary.landed[0]
    assert found[0].payload["workspace"] == str(workspace.root)


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_watch_retrains_a_dropped_batch_end_to_end(tmp_path, digits):
    """The acceptance test: a watcher on a temp folder retrains on a dropped batch."""
    ws, drops = tmp_path / "ws", tmp_path / "drops"
    ws.mkdir()
    drops.mkdir()
    write_params(ws, {**TINY_PARAMS, "watch": {"poll_seconds": 0.5, "retrain": "local"}})
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # a busy CI box starts it slowly
    first = write_npz(tmp_path / "first.npz", *chunk(digits, 0, per_class=100))
    cli = [sys.executable, "-m", "app.cli", "--workspace", str(ws)]
    subprocess.run([*cli, "run", "--data", str(first)], env=env, check=True, timeout=600)
    watcher = subprocess.Popen([*cli, "watch", str(drops)], env=env)
    try:
        write_npz(drops / "new.npz", *chunk(digits, 2, per_class=50))  # samples 100-149 of each class
        (drops / "new.npz_READY").touch()
        registry = ws / "models" / "registry.json"
        wait_for(lambda: len(json.loads(registry.read_text())["candidates"]) == 2, 900,
                 "the retrain's candidate in the registry")
    finally:
        children = child_pids(watcher.pid)  # e.g. Prefect's temporary server
        watcher.terminate()
        watcher.wait(30)
    assert watcher.returncode == 130  # SIGTERM (a service manager's stop) stops it as Ctrl-C does
    assert not [pid for pid in children if alive(pid)], "the stopped watcher left processes running"
    assert (drops / DONE / "new.npz").exists()
    assert len(list((ws / "data" / "batches").glob("*.csv"))) == 2
    retrained = json.loads(registry.read_text())["candidates"][1]
    assert retrained["trigger"] == "continual-retraining"


def test_event_mode_without_a_server_is_refused(workspace, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from evergreen.errors import BadInputError

    set_watch(workspace, retrain="event")
    (tmp_path / "drops").mkdir()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(BadInputError, match="PREFECT_API_URL is not set"):
            watch_folder(workspace, tmp_path / "drops", once=True)
