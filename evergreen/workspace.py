"""Workspace paths, atomic writes, and git/DVC set-up of a workspace."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen.errors import EvergreenError


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EvergreenError(f"{path}: write failed: {exc.strerror}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=check)


def git_commit(root: Path) -> str | None:
    """The workspace's HEAD commit, or None before the first commit."""
    out = git(root, "rev-parse", "HEAD", check=False)
    return out.stdout.strip() if out.returncode == 0 else None
