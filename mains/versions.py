"""The version store: the registry file and the model versions it names, for classifiers and
generators alike. Every write is atomic and fsynced: a version folder is complete on disk
before it gets its name, and the registry is replaced in one rename."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from evergreen.errors import EvergreenError
from evergreen.workspace import fsync_dir, fsync_tree, read_json, write_json
from tasks.promote import CandidateEntry, Judgement, empty_registry, find_version, now, record


def load_registry(path: Path) -> dict:
    """The registry, or an empty one; a corrupt file is an error, never silently replaced."""
    if not path.exists():
        return empty_registry()
    try:
        registry = read_json(path)
    except ValueError as exc:
        raise EvergreenError(f"{path}: registry is not valid JSON ({exc}); restore it from git "
                             "or DVC before running again") from None
    missing = set(empty_registry()) - set(registry)
    if missing:
        raise EvergreenError(f"{path}: registry lacks fields {sorted(missing)}")
    return registry


def save_registry(path: Path, registry: dict) -> None:
    """One atomic write: the entry and the champion switch land together or not at all."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    write_json(path, registry)


def store_version(registry: dict, model_dir: Path, versions_dir: Path, sha256: str,
                  teacher_dir: Path | None = None, prefix: str = "v",
                  export: Path | None = None) -> str:
    """Copy the candidate's files to versions/<prefix><n> (temp dir, fsync, rename); returns it.

    A compressed candidate keeps the teacher it came from in versions/<v>/teacher/, so a
    retrain can warm-start the teacher architecture from it; `export` (an ONNX file made from
    these weights elsewhere) joins the version as its model.onnx.
    """
    version = find_version(registry, sha256)
    if version:
        return version
    version, tmp = f"{prefix}{len(registry['versions']) + 1}", None
    try:
        versions_dir.mkdir(parents=True, exist_ok=True)
        clear_unreferenced(registry, versions_dir, prefix)
        tmp = Path(tempfile.mkdtemp(dir=versions_dir, prefix=f".{version}."))
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        if export is not None:
            shutil.copy2(export, tmp / "model.onnx")
        if teacher_dir is not None:
            (tmp / "teacher").mkdir()
            for name in ("model.safetensors", "model.json"):
                shutil.copy2(teacher_dir / name, tmp / "teacher" / name)
        fsync_tree(tmp)  # complete on disk before it gets its name
        tmp.replace(versions_dir / version)
        fsync_dir(versions_dir)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise EvergreenError(f"{versions_dir / version}: cannot store the candidate: "
                             f"{exc.strerror}") from None
    relative = f"{versions_dir.parent.name}/{versions_dir.name}/{version}"  # from the workspace
    registry["versions"][version] = {"sha256": sha256, "path": relative, "created_at": now()}
    return version


def clear_unreferenced(registry: dict, versions_dir: Path, prefix: str = "v") -> None:
    """Remove what a promotion killed before its registry write left: temp and unlisted versions."""
    for path in versions_dir.iterdir():
        leftover = (re.fullmatch(rf"\.?{prefix}\d+(\..+)?", path.name)
                    and path.name not in registry["versions"])
        if leftover and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def record_candidate(path: Path, entry: CandidateEntry, sha256: str, what: str,
                     judge: Callable[[dict], Judgement], store: Callable[[dict], str]) -> dict:
    """The one promotion protocol: a candidate that is the champion is recorded unchanged; any
    other is judged, stored as a version, recorded, and made champion if it passed.

    Returns the entry as recorded, with `new_version` (whether a version folder was added).
    """
    registry = load_registry(path)
    champion = entry.champion_before = registry["champion"]
    if champion and registry["versions"][champion]["sha256"] == sha256:
        save_registry(path, record(registry, entry.unchanged(what).to_json(), False, ""))
        return {**entry.to_json(), "new_version": False}
    judgement, known = judge(registry), set(registry["versions"])
    entry.judged(store(registry), judgement)
    save_registry(path, record(registry, entry.to_json(), judgement.passed,
                               judgement.promotion_reason))
    return {**entry.to_json(), "new_version": entry.version not in known}
