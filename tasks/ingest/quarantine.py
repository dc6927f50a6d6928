"""Quarantine: a batch that failed its checks kept whole, or a source that could not be read
kept as a manifest (and private copies) of exactly the files ingest opened."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from evergreen.errors import BadInputError
from evergreen.workspace import atomic_write_bytes, atomic_write_text
from tasks.ingest.batches import Candidate, metadata_csv
from tasks.ingest.names import display_name
from tasks.ingest.safe_files import Opened, SourceFiles

SHARD_BYTES = 128 * 2**20  # a quarantined batch's shards, as ingest.shard_mb's default


def shown_source(source: str | tuple[str, str]) -> str:
    """A source as shown in messages and records: escaped, a pair joined by ' + '."""
    return " + ".join(display_name(str(s)) for s in (source if isinstance(source, tuple) else (source,)))


def private_folder(quarantine_dir: Path, name: str) -> Path:
    """quarantine/<name>/, mode 0700 (the workspace's .gitignore lists data/quarantine/)."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / name
    target.mkdir(mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    return target


def quarantine_candidate(candidate: Candidate, reasons: list[str], quarantine_dir: Path) -> Path:
    """Keep a rejected batch whole in quarantine/<batch-id>/ with its reasons; never delete it:
    its pixels as shards in batch/ (as a landed batch's, read a chunk at a time), its rows in
    metadata.csv, in the same order."""
    from tasks.data import chunks, write_shards

    target = private_folder(quarantine_dir, candidate.batch_id)
    if len(candidate.batch):
        shards = target / "batch"
        shutil.rmtree(shards, ignore_errors=True)
        write_shards(chunks(candidate.batch.x), shards, "batch", SHARD_BYTES)
        for path in shards.iterdir():
            os.chmod(path, 0o600)
        os.chmod(shards, 0o700)
        atomic_write_bytes(target / "metadata.csv", metadata_csv(candidate.meta), private=True)
    lines = [f"source: {shown_source(candidate.source)}", *reasons]
    lines += [f"rejected sample {r.source}: {r.reason}" for r in candidate.rejected]
    atomic_write_text(target / "reasons.txt", "\n".join(lines) + "\n", private=True)
    return target


def quarantine_source(source: str | tuple[str, str], reason: str, quarantine_dir: Path,
                      max_bytes: int, opened: list[Opened]) -> Path | None:
    """A source that could not be read: a manifest of the files ingest opened (size, sha256)
    and, when they total at most max_bytes, copies of exactly those files (mode 0600).

    Nothing else is copied: not the rest of the folder, not hidden files, not files a link
    points to outside the source. Nothing at all when no file was opened.
    """
    files = list({o.path: o for o in opened}.values())
    if not files:
        return None
    stamp = "".join(f"{o.path}:{o.size}" for o in files) + reason
    target = private_folder(quarantine_dir, "source-" + hashlib.sha256(
        stamp.encode("utf-8", "surrogateescape")).hexdigest()[:12])
    copy = sum(o.size for o in files) <= max_bytes
    rows = [_quarantine_file(o, i, target / "files" if copy else None) for i, o in enumerate(files)]
    atomic_write_text(target / "manifest.json", json.dumps(
        {"source": shown_source(source), "reason": reason, "files": rows}, indent=2) + "\n",
        private=True)
    atomic_write_text(target / "reasons.txt", f"source: {shown_source(source)}\n{reason}\n",
                      private=True)
    return target


def _quarantine_file(opened: Opened, index: int, folder: Path | None) -> dict:
    """Hash (and copy into folder, streamed) one file ingest opened, through the same safe
    opener; at most the size it had when read."""
    files = SourceFiles(opened.path.parent)
    name = None
    if folder is not None:
        parts = PurePosixPath(opened.shown).parts
        name = opened.shown if parts and not opened.shown.startswith("/") and ".." not in parts \
            and ":" not in opened.shown else f"{index:05d}-{display_name(opened.path.name)}"
    try:
        with files.open(opened.path, opened.shown) as fh:
            digest = _copy_private(fh, opened.size, folder / name if name else None)
    except BadInputError as exc:  # gone or changed since: say so, copy nothing
        return {"file": opened.shown, "size": opened.size, "sha256": None, "copied": None,
                "note": str(exc)}
    return {"file": opened.shown, "size": opened.size, "sha256": digest, "copied": name}


def _copy_private(src, size: int, dest: Path | None) -> str:
    """sha256 of the first `size` bytes of src, written to dest (0600, folders 0700) if given."""
    digest = hashlib.sha256()
    out, tmp = None, None
    if dest is not None:
        for parent in reversed(dest.parents):  # the folders it needs, private like the file
            if not parent.exists():
                parent.mkdir(mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:50]}.", suffix=".tmp")
        out = os.fdopen(fd, "wb")
    try:
        left = size
        while left > 0 and (chunk := src.read(min(1 << 20, left))):
            digest.update(chunk)
            left -= len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            os.replace(tmp, dest)
    except BaseException:
        if out is not None:
            out.close()
            Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()
