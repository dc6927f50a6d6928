"""Image folders: <root>/<label>/... (nested folders allowed), or images beside a labels CSV.

Two passes over the files: headers first (sizes, modes: limits and the batch's shape are
decided before any pixel is decoded), then decoding in worker processes (tasks.ingest.pool),
each image straight into its row of the batch's array, or, past ingest.max_batch_pixels, into
shards on disk (tasks.ingest.staging).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evergreen.errors import BadInputError
from tasks.ingest.decode import FORMAT_NAMES, SUFFIXES, SWAPS_SIDES, Header, Target
from tasks.ingest.labels_csv import Entry, csv_relative, header_columns, lookup, read_labels
from tasks.ingest.names import display_name, relative
from tasks.ingest.pool import ReadPool
from tasks.ingest.reading import Batch, Reading, Rejected
from tasks.ingest.safe_files import SourceFiles
from tasks.ingest.shape import choose_target, fixed_target
from tasks.ingest.staging import ShardSink, sink_for

OS_FILES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX", ".AppleDouble", ".Spotlight-V100",
            ".Trashes", ".fseventsd", "@eaDir", "Icon\r"}
MAX_DEPTH = 32
LABELS_SUFFIXES = (".csv", ".tsv")


def os_file(name: str) -> bool:
    """Hidden files and OS droppings (.DS_Store, __MACOSX/, ._resource forks) are not samples."""
    return name.startswith(".") or name in OS_FILES


@dataclass
class Walk:
    """What a walk found: image files, other regular files, refused entries, folders to visit."""

    images: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)
    queue: deque = field(default_factory=deque)


def walk(root: Path, reading: Reading) -> tuple[list[Path], list[Path], list[Rejected]]:
    """(image files, other regular files, refused entries) under root, breadth first.

    Links that leave the source are refused, not followed; hidden files, OS droppings and
    special files (FIFOs, sockets, devices) are skipped and named in the read's log.
    """
    found = Walk(seen={reading.files.real_root}, queue=deque([(root, 0)]))
    while found.queue:
        folder, depth = found.queue.popleft()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.rejects.append(Rejected(reading.names(folder),
                                          f"cannot list folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            try:
                _sort_entry(entry, depth, reading, found)
            except OSError as exc:  # a link loop, a file gone meanwhile
                found.rejects.append(Rejected(reading.names(Path(entry.path)),
                                              f"cannot read: {exc.strerror or exc}"))
    return sorted(found.images), found.others, found.rejects


def _sort_entry(entry: os.DirEntry, depth: int, reading: Reading, found: Walk) -> None:
    """One folder entry: an image, another file, a folder to visit, or refused or skipped."""
    path, names, skipped = Path(entry.path), reading.names, reading.log.skipped
    if os_file(entry.name):
        skipped.append(Rejected(names(path), "hidden or OS metadata file"))
    elif entry.is_symlink() and not reading.files.inside(path):
        found.rejects.append(Rejected(names(path), "symlink points outside the source (or loops); "
                                                   "not followed"))
    elif entry.is_dir():
        real = path.resolve()  # each real folder once: in-source links cannot loop
        if depth + 1 > MAX_DEPTH:
            skipped.append(Rejected(names(path), f"folder deeper than {MAX_DEPTH} levels; not read"))
        elif real not in found.seen:
            found.seen.add(real)
            found.queue.append((path, depth + 1))
    elif not entry.is_file():
        skipped.append(Rejected(names(path), "not a regular file (FIFO, socket, device or broken "
                                             "link); not read"))
    elif path.suffix.lower() in SUFFIXES:
        found.images.append(path)
    else:
        found.others.append(path)


def read_image_folder(root: Path, reading: Reading) -> tuple[Batch, list[Rejected]]:
    """Images under root/<label>/..., or directly in root with a labels CSV."""
    paths, others, rejects = walk(root, reading)
    nested = [p for p in paths if p.parent != root]
    flat = [p for p in paths if p.parent == root]
    if flat and not nested:
        labels, entries, more = _labels_from_csv(root, flat, others, reading, rejects)
        rejects += more
    else:
        entries = _folder_rois(nested, others, root, reading, rejects) if reading.cfg.crop_roi else {}
        others_skipped([p for p in others if not (entries and _is_roi_csv(p, root))], root, reading)
        rejects += [Rejected(reading.names(p), "image is not inside a <label>/ folder") for p in flat]
        labels = {p: display_name(relative(p, root).split("/", 1)[0]) for p in nested}
    if not labels:
        raise BadInputError(f"{reading.names(root)}: no images found in <root>/<label>/ "
                            f"({FORMAT_NAMES})" + (f"; {len(flat)} lie directly in the root" if flat else "")
                            + _listed("refused", rejects) + _listed("skipped", reading.log.skipped))
    batch, bad = _decode_all(list(labels), labels, entries, reading)
    return batch, rejects + bad


def _listed(what: str, rows: list[Rejected], shown: int = 3) -> str:
    if not rows:
        return ""
    listed = ", ".join(f"{r.source} ({r.reason})" for r in rows[:shown])
    return f"; {what} {len(rows)}: {listed}" + (", ..." if len(rows) > shown else "")


def _is_roi_csv(path: Path, root: Path) -> bool:
    return path.suffix.lower() in LABELS_SUFFIXES and path.parent != root


def _folder_rois(images: list[Path], others: list[Path], root: Path, reading: Reading,
                 rejects: list[Rejected]) -> dict[Path, Entry]:
    """With ingest.crop_roi, the ROI of each image from its class folder's own CSV (GTSRB's
    GT-<class>.csv); the folder still gives the label."""
    cfg, by_folder, csvs = reading.cfg, {}, [p for p in others if _is_roi_csv(p, root)]
    for path in csvs:
        with reading.files.open(path, reading.names(path)) as fh:
            found, bad = read_labels(fh, reading.names(path), cfg.csv_label_column, True,
                                     cfg.max_csv_line_bytes)
        by_folder.setdefault(path.parent, {}).update(found)
        rejects += bad
    if csvs:
        rows = sum(len(v) for v in by_folder.values())
        reading.log.notes.append(f"ROIs from {len(csvs)} class-folder CSV(s) ({rows} rows): "
                                 + ", ".join(reading.names(p) for p in csvs[:2])
                                 + (", ..." if len(csvs) > 2 else ""))
    entries = {}
    for image in images:
        entry = lookup(by_folder.get(image.parent, {}), image.name, image.name)
        if entry is not None:
            entries[image] = entry
    if len(entries) < len(images):
        reading.log.notes.append(f"ingest.crop_roi: {len(images) - len(entries)} images have no "
                                 "ROI row and are used whole")
    return entries


def others_skipped(others: list[Path], root: Path, reading: Reading) -> None:
    """Name each file that is not an image as skipped (a class folder's own CSV included)."""
    for path in others:
        what = ("a CSV inside a class folder (not read)" if path.suffix.lower() in LABELS_SUFFIXES
                and path.parent != root else "not an image")
        reading.log.skipped.append(Rejected(reading.names(path), what))


def _labels_from_csv(root: Path, flat: list[Path], others: list[Path], reading: Reading,
                     refused: list[Rejected]):
    """Labels of images lying directly in root, from ingest.labels_csv or the one CSV found."""
    path = find_labels_csv(root, others, reading, refused)
    files = reading.files if reading.files.inside(path) else SourceFiles(
        path.parent, reading.cfg.read_timeout_s, reading.log.opened)
    shown = reading.names(path) if path.parent == root else display_name(str(path))
    cfg = reading.cfg
    with files.open(path, shown) as fh:
        entries, rejects = read_labels(fh, shown, cfg.csv_label_column, cfg.crop_roi,
                                       cfg.max_csv_line_bytes)
    others_skipped([p for p in others if p != path], root, reading)
    reading.log.notes.append(f"labels from {shown} ({len(entries)} rows)")
    labels, found = {}, {}
    for image in flat:
        rel = relative(image, root)
        entry = lookup(entries, rel, csv_relative(rel, root, path.parent))
        if entry is None:
            rejects.append(Rejected(reading.names(image), f"no label for this file in {shown}"))
        else:
            labels[image], found[image] = entry.label, entry
    return labels, found, rejects


def find_labels_csv(root: Path, others: list[Path], reading: Reading,
                    refused: list[Rejected]) -> Path:
    """ingest.labels_csv, else the one CSV beside the images (or one folder up) whose header
    has a file-name and a label column."""
    cfg = reading.cfg
    if cfg.labels_csv:
        given = Path(cfg.labels_csv).expanduser()
        path = given if given.is_absolute() or given.exists() else root / given
        if not path.is_file():
            raise BadInputError(f"{cfg.labels_csv}: ingest.labels_csv: no such file")
        return path
    for folder in (root, root.parent):
        candidates = [p for p in (others if folder == root else _csvs_in(folder))
                      if p.parent == folder and p.suffix.lower() in LABELS_SUFFIXES
                      and _is_labels_csv(p, reading)]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise BadInputError(f"{reading.names(root)}: several labels CSVs "
                                f"({', '.join(display_name(p.name) for p in candidates)}); "
                                "name one: evergreen ingest DIR LABELS.csv (or ingest.labels_csv)")
    raise BadInputError(f"{reading.names(root)}: images lie directly in the folder with no labels: "
                        "put them in <label>/ sub-folders, or give a labels CSV (file name and "
                        "label columns): evergreen ingest DIR LABELS.csv (or ingest.labels_csv)"
                        + _listed("refused", refused) + _listed("skipped", reading.log.skipped))


def _csvs_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in LABELS_SUFFIXES
                      and not os_file(p.name))
    except OSError:
        return []


def _is_labels_csv(path: Path, reading: Reading) -> bool:
    files = SourceFiles(path.parent, reading.cfg.read_timeout_s)  # a look at the header only
    try:
        with files.open(path, display_name(path.name)) as fh:
            cols = header_columns(fh, reading.cfg.csv_label_column, 65536, path.name)
    except BadInputError:
        return False
    return cols is not None


def _roi(entry: Entry | None, header: Header) -> tuple[int, int, int, int] | None:
    """The ROI on this image, in the file's pixel grid (None: the whole image)."""
    if entry is None:
        return None
    w, h = (header.height, header.width) if header.orientation in SWAPS_SIDES else (header.width,
                                                                                    header.height)
    return entry.roi_for(w, h)


def _decode_all(paths: list[Path], labels: dict[Path, str], entries: dict[Path, Entry],
                reading: Reading) -> tuple[Batch, list[Rejected]]:
    with ReadPool(reading, len(paths)) as pool:
        return _decode_with(pool, paths, labels, entries, reading)


def _decode_with(pool: ReadPool, paths: list[Path], labels: dict[Path, str],
                 entries: dict[Path, Entry], reading: Reading) -> tuple[Batch, list[Rejected]]:
    """Headers first (sizes and limits decided before any pixel is decoded), then pixels; one
    pass when params fix the shape (each header still checked before its file is decoded)."""
    target = fixed_target(reading.cfg, reading.conform_to)
    if target is not None and not entries:
        sink = sink_of(reading, len(paths), target)
        return _collect(zip(paths, pool.read_all(paths, target), strict=True), sink, labels, [],
                        reading)
    headers, rejects = [], []
    for path, got in zip(paths, pool.probe_all(paths), strict=True):
        if isinstance(got, Rejected):
            rejects.append(got)
        else:
            headers.append((path, got))
    rois = {p: _roi(entries.get(p), h) for p, h in headers}
    empty = {p for p, r in rois.items() if r is not None and (r[2] <= r[0] or r[3] <= r[1])}
    rejects += [Rejected(reading.names(p), "ROI lies outside the image") for p, _ in headers
                if p in empty]
    headers = [(p, h) for p, h in headers if p not in empty]
    if not headers:
        return Batch(np.zeros((0, 1, 1, 1), np.uint8), np.array([], dtype=str), [], []), rejects
    sizes = [(r[3] - r[1], r[2] - r[0]) if (r := rois[p]) else (h.height, h.width) for p, h in headers]
    target, notes = choose_target(sizes, any(h.colour for _, h in headers), reading.cfg,
                                  reading.conform_to)
    reading.log.notes += notes
    sink = sink_of(reading, len(headers), target)
    items = [(path, header, rois[path]) for path, header in headers]
    return _collect(zip([p for p, _ in headers], pool.decode_all(items, target), strict=True),
                    sink, labels, rejects, reading)


def sink_of(reading: Reading, n: int, target: Target):
    """Memory up to ingest.max_batch_pixels, staged shards on disk above it (tasks.ingest.staging)."""
    cfg = reading.cfg
    sink = sink_for(n, target, cfg.max_batch_pixels, reading.staging, cfg.shard_mb,
                    reading.names(reading.names.base))
    if isinstance(sink, ShardSink):
        reading.log.notes.append(f"{n} images past ingest.max_batch_pixels: decoded into shards "
                                 "on disk as they are read")
    return sink


def _collect(results, sink, labels: dict[Path, str], rejects: list[Rejected],
             reading: Reading) -> tuple[Batch, list[Rejected]]:
    """The batch of the decoded images (each straight into the sink), and the refused."""
    kept, decoded = [], []
    for path, got in results:
        if isinstance(got, Rejected):
            rejects.append(got)
            continue
        image, how = got
        sink.put(image)
        kept.append(path)
        decoded.append(how)
    batch = Batch(sink.images(), np.array([labels[p] for p in kept], dtype=str),
                  [reading.names(p) for p in kept], decoded)
    return batch, rejects
