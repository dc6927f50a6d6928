"""One writer per workspace: a second run exits 75 naming the holder; stale locks clear."""

import json
import subprocess
import sys

import pytest

from evergreen.errors import WorkspaceBusyError
from evergreen.workspace import workspace_lock
from flows.cli import main


@pytest.fixture
def live_holder(workspace):
    """A lock held by a live process (a sleeping child) on this host."""
    import socket

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    workspace.state.mkdir(parents=True, exist_ok=True)
    (workspace.state / "lock").write_text(json.dumps({
        "pid": child.pid, "host": socket.gethostname(), "command": "evergreen run",
        "since": "2026-11-29T10:00:00+00:00"}))
    yield child
    child.kill()
    child.wait()


def test_second_writer_exits_75_naming_the_holder(workspace, live_holder, capsys):
    code = main(["--workspace", str(workspace.root), "ingest", "digits"])
    assert code == 75
    err = capsys.readouterr().err
    assert "workspace busy: evergreen run" in err and "since 2026-11-29T10:00:00" in err
    assert not workspace.batches.exists()  # nothing was touched


def test_readers_do_not_need_the_lock(workspace, live_holder, capsys):
    assert main(["--workspace", str(workspace.root), "status", "--json"]) == 0


def test_waiting_writer_gets_the_lock_when_the_holder_ends(workspace, live_holder):
    import threading

    threading.Timer(1.0, lambda: (workspace.state / "lock").unlink()).start()
    with workspace_lock(workspace, "test", wait_s=10):
        holder = json.loads((workspace.state / "lock").read_text())
        assert holder["command"] == "test"
    assert not (workspace.state / "lock").exists()


def test_stale_lock_of_a_dead_process_is_cleared(workspace):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    workspace.state.mkdir(parents=True, exist_ok=True)
    (workspace.state / "lock").write_text(json.dumps({
        "pid": dead.pid, "host": socket.gethostname(), "command": "evergreen run", "since": "x"}))
    with workspace_lock(workspace, "test"):
        assert json.loads((workspace.state / "lock").read_text())["pid"] != dead.pid


def test_lock_is_released_when_the_command_fails(workspace):
    with pytest.raises(RuntimeError), workspace_lock(workspace, "test"):
        raise RuntimeError("boom")
    with workspace_lock(workspace, "again"):
        pass


def test_held_lock_blocks_in_process_too(workspace):
    with workspace_lock(workspace, "first"), pytest.raises(WorkspaceBusyError, match="first"):
        with workspace_lock(workspace, "second"):
            pass
