"""Workspace paths, atomic writes, and git/DVC set-up of a workspace."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evergreen.errors import EvergreenError, WorkspaceBusyError


@dataclass(frozen=True)
class Workspace:
    """The fixed places of a workspace (a git + DVC repo holding params and data)."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def batches(self) -> Path:
        return self.root / "data" / "batches"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def versions(self) -> Path:
        return self.root / "models" / "versions"

    @property
    def registry(self) -> Path:
        return self.root / "models" / "registry.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def state(self) -> Path:
        """Local, untracked state: checkpoints, locks."""
        return self.root / ".evergreen"

    def model_dir(self, role: str) -> Path:
        return self.models / role


def resolve_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """--workspace, else $EVERGREEN_WORKSPACE, else the current directory."""
    chosen = path or os.environ.get("EVERGREEN_WORKSPACE") or os.getcwd()
    return Workspace(Path(chosen).expanduser().resolve())


def atomic_write_bytes(path: Path, data: bytes, private: bool = False) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path` (mode 0600
    when `private`, else the usual mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise EvergreenError(f"{path.parent}: cannot write here: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the usual mode
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EvergreenError(f"{path}: write failed: {exc.strerror}") from None


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under root (before renaming a finished temp folder in)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, private: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), private)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows as CSV, written atomically (a header of `epoch` alone when there are none)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=check)


def git_commit(root: Path) -> str | None:
    """The workspace's HEAD commit, or None before the first commit."""
    out = git(root, "rev-parse", "HEAD", check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def _holder(fd: int) -> dict:
    """What the lock's holder wrote about itself ({} while it is still writing)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # a holder between truncate and write
        return {}
    return info if isinstance(info, dict) else {}


def busy_message(holder: dict, lock: Path) -> str:
    if not holder:
        return f"workspace busy: another writer is starting; lock {lock}"
    return (f"workspace busy: {holder.get('command', 'run')} (pid {holder.get('pid')}) "
            f"since {holder.get('since')}; lock {lock}")


@contextlib.contextmanager
def workspace_lock(ws: Workspace, command: str, wait_s: float = 0.0):
    """One writer per workspace: wait up to `wait_s`, else WorkspaceBusyError (exit 75).

    An exclusive flock(2) on `.evergreen/lock`, which the kernel releases when its holder
    exits or dies, so a dead writer's lock clears itself and nothing has to judge staleness.
    The file is never removed (a removed file would let a second writer lock a new one); the
    holder writes who it is into it, for the message others get.
    """
    import fcntl

    lock = ws.state / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusyError(busy_message(_holder(fd), lock)) from None
                time.sleep(0.2)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: no holder to name (the kernel unlocks on close)
    finally:
        os.close(fd)
