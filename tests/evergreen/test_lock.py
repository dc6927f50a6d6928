"""One writer per workspace: a second run exits 75 naming the holder; stale locks clear."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from evergreen.errors import WorkspaceBusyError
from evergreen.workspace import workspace_lock
from tests.conftest import hold_workspace_lock


@pytest.fixture
def live_holder(workspace):
    """The lock held by a live process (a sleeping child) on this host."""
    child = hold_workspace_lock(workspace, "evergreen run")
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

    threading.Timer(1.0, live_holder.kill).start()
    with workspace_lock(workspace, "test", wait_s=10):
        holder = json.loads((workspace.state / "lock").read_text())
        assert holder["command"] == "test" and holder["pid"] == os.getpid()
    assert (workspace.state / "lock").read_text() == ""  # released: nobody named


def test_the_lock_of_a_killed_holder_is_free(workspace):
    holder = hold_workspace_lock(workspace, "evergreen run")
    holder.kill()  # SIGKILL: no cleanup ran; the kernel dropped its lock
    holder.wait()
    assert "evergreen run" in (workspace.state / "lock").read_text()  # its note is still there
    with workspace_lock(workspace, "test"):
        assert json.loads((workspace.state / "lock").read_text())["command"] == "test"


def test_a_leftover_lock_file_of_a_dead_process_is_no_obstacle(workspace):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    workspace.state.mkdir(parents=True, exist_ok=True)
    (workspace.state / "lock").write_text(json.dumps({
        "pid": dead.pid, "host": socket.gethostname(), "command": "evergreen run", "since": "x"}))
    with workspace_lock(workspace, "test"):
        assert json.loads((workspace.state / "lock").read_text())["pid"] != dead.pid


def contend(path: str, rounds: int, barrier, inside, overlaps) -> None:
    """One writer: each round, at the barrier, try the lock; count the times it finds another
    writer inside with it."""
    from evergreen.workspace import Workspace

    ws = Workspace(Path(path))
    for _ in range(rounds):
        barrier.wait()
        try:
            with workspace_lock(ws, f"writer {os.getpid()}"):
                with inside.get_lock():
                    inside.value += 1
                    if inside.value > 1:
                        overlaps.value += 1
                time.sleep(0.002)
                with inside.get_lock():
                    inside.value -= 1
        except WorkspaceBusyError:
            pass


def test_writers_started_together_are_never_two_inside(workspace):
    """Four writers released together, 200 times: the O_EXCL lock let two in 10 times here
    (one read the other's empty file as stale and removed it)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    rounds, barrier = 200, ctx.Barrier(4)
    inside, overlaps = ctx.Value("i", 0), ctx.Value("i", 0)
    writers = [ctx.Process(target=contend, args=(str(workspace.root), rounds, barrier, inside,
                                                 overlaps)) for _ in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0] * 4
    assert overlaps.value == 0


def test_busy_message_names_a_holder_or_says_it_is_starting(workspace, tmp_path):
    from evergreen.workspace import busy_message

    lock = workspace.state / "lock"
    assert busy_message({}, lock) == f"workspace busy: another writer is starting; lock {lock}"
    assert busy_message({"command": "evergreen run", "pid": 7, "since": "t"}, lock).startswith(
        "workspace busy: evergreen run (pid 7) since t")


def test_lock_is_released_when_the_command_fails(workspace):
    with pytest.raises(RuntimeError), workspace_lock(workspace, "test"):
        raise RuntimeError("boom")
    with workspace_lock(workspace, "again"):
        pass


def test_held_lock_blocks_in_process_too(workspace):
    with workspace_lock(workspace, "first"), pytest.raises(WorkspaceBusyError, match="first"):
        with workspace_lock(workspace, "second"):
            pass
