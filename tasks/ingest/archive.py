"""Archives (zip, tar, compressed tar): every member checked before anything is extracted.

Absolute paths, '..', links that leave the archive and special files refuse the whole
archive; member count and bytes are capped (ingest.max_archive_members, max_archive_bytes),
the bytes counted as they are written since headers can lie; symlinks are made last, so no
file is ever written through one.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.names import display_name
from tasks.ingest.safe_files import SourceFiles
from tasks.ingest.streams import CHUNK


def extract_archive(fh: IO[bytes], root: Path, kind: str, cfg: IngestConfig, shown: str) -> None:
    """Extract a zip or tar archive (`kind`) into root, refusing it whole when it is unsafe."""
    if kind == "zip":
        _extract_zip(fh, root, cfg, shown)
    else:
        _extract_tar(fh, root, cfg, shown)


def _extract_zip(path: IO[bytes], root: Path, cfg: IngestConfig, shown: str) -> None:
    """Check every member from the central directory, then extract; links come last."""
    sink, links = Sink(root, cfg, shown), []
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_totals(len(infos), sum(i.file_size for i in infos), cfg, shown)
            plan = [(_member_path(i.filename, shown), i) for i in infos]
            for rel, info in plan:
                if stat.S_ISLNK(info.external_attr >> 16):
                    with zf.open(info) as fh:
                        target = fh.read(4096).decode("utf-8", "replace")
                    links.append((rel, _checked_link(rel, target, False, shown)))
            for rel, info in plan:
                if info.is_dir():
                    sink.mkdir(rel)
                elif rel.parts and not stat.S_ISLNK(info.external_attr >> 16):
                    with zf.open(info) as src:
                        sink.write(rel, src)
            for rel, target in links:
                sink.link(rel, target)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, ValueError,
            NotImplementedError) as exc:
        raise BadInputError(f"{shown}: cannot extract zip archive: {type(exc).__name__}") from None


def _extract_tar(fh: IO[bytes], root: Path, cfg: IngestConfig, shown: str) -> None:
    """Check every member (paths, links, kinds, totals), then extract; links come last."""
    sink = Sink(root, cfg, shown)
    try:
        with tarfile.open(fileobj=fh, mode="r:*") as tf:
            plan = _tar_plan(tf, cfg, shown)
            for rel, m, _ in plan:
                if m.isdir():
                    sink.mkdir(rel)
                elif (m.isreg() or m.islnk()) and rel.parts:  # a hardlink: a copy of its target
                    src = tf.extractfile(m)
                    if src is None:
                        raise BadInputError(f"{shown}: member {display_name(m.name)!r} cannot be read")
                    with src:
                        sink.write(rel, src)
            for rel, m, target in plan:
                if m.issym():
                    sink.link(rel, target)
    except (tarfile.TarError, OSError, EOFError, zlib.error, KeyError, RuntimeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BadInputError(f"{shown}: cannot extract tar archive: {why}") from None  # no temp paths


def _tar_plan(tf: tarfile.TarFile, cfg: IngestConfig, shown: str) -> list[tuple]:
    """(path, member, link target) for every member, refusing what is unsafe, before extracting."""
    plan, size = [], 0
    for count, m in enumerate(tf, start=1):
        size += max(m.size, 0)
        _check_totals(count, size, cfg, shown)
        rel = _member_path(m.name, shown)
        if m.issym() or m.islnk():
            plan.append((rel, m, _checked_link(rel, m.linkname, m.islnk(), shown)))
        elif m.isreg() or m.isdir():
            plan.append((rel, m, None))
        else:
            raise BadInputError(f"{shown}: member {display_name(m.name)!r} is a device, fifo or "
                                "other special file; only files, folders and links inside are allowed")
    return plan


def _member_path(name: str, shown: str) -> PurePosixPath:
    """A member's path inside the archive; absolute paths and '..' refuse the whole archive."""
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or re.match(r"[A-Za-z]:", text) or ".." in parts:
        raise BadInputError(f"{shown}: member {display_name(name)!r} has an absolute path or '..' "
                            "(zip slip); refusing the whole archive, nothing was extracted")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _link_target(member: PurePosixPath, target: str, hard: bool) -> PurePosixPath | None:
    """Where a link lands inside the archive (lexically), or None when it leaves it."""
    text = target.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        return None
    parts: list[str] = []
    for part in ((PurePosixPath() if hard else member.parent) / text).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return PurePosixPath(*parts)


def _checked_link(rel: PurePosixPath, target: str, hard: bool, shown: str) -> PurePosixPath:
    """Where a link member lands inside the archive; one that leaves it refuses the archive."""
    inside = _link_target(rel, target, hard)
    if inside is None:
        kind = "hardlink" if hard else "symlink"
        raise BadInputError(f"{shown}: member {display_name(rel.as_posix())!r} is a {kind} that "
                            "points outside the archive; refusing the whole archive")
    return inside


def _check_totals(count: int, size: int, cfg: IngestConfig, shown: str) -> None:
    """Refuse an archive over ingest.max_archive_members or max_archive_bytes."""
    if count > cfg.max_archive_members:
        raise BadInputError(f"{shown}: more than ingest.max_archive_members "
                            f"{cfg.max_archive_members} members; refused")
    if size > cfg.max_archive_bytes:
        raise BadInputError(f"{shown}: more than ingest.max_archive_bytes {cfg.max_archive_bytes} "
                            "bytes uncompressed; refused")


class Sink:
    """Writes extracted files under root, counting bytes as they come (headers can lie)."""

    def __init__(self, root: Path, cfg: IngestConfig, shown: str):
        self.root, self.cfg, self.shown, self.written = root, cfg, shown, 0

    def mkdir(self, rel: PurePosixPath) -> None:
        self.root.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)

    def write(self, rel: PurePosixPath, src: IO[bytes]) -> None:
        dest = self.root.joinpath(*rel.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                _check_totals(0, self.written, self.cfg, self.shown)
                out.write(chunk)

    def link(self, rel: PurePosixPath, target: PurePosixPath) -> None:
        """A symlink, made after every file: no file is ever written through one."""
        dest = self.root.joinpath(*rel.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(self.root.joinpath(*target.parts), dest.parent), dest)
        if not SourceFiles(self.root).inside(dest):  # chained links can still escape
            raise BadInputError(f"{self.shown}: member {display_name(rel.as_posix())!r} is a symlink that "
                                "points outside the archive; refused")
