"""A folder's images probed and decoded in worker processes, one per core, in chunks; a small
folder (or a machine of one core) is read in this process.

Workers are spawned, not forked: the caller may hold threads (Prefect's, torch's), and a fork
copies their locks mid-use. Each worker opens files through its own SourceFiles with the same
checks and read timeout, and sends back what it read (headers, or the pixels of its chunk),
the files it opened (for the quarantine's record) and the files it refused. Results come back
in order, with a bounded number of chunks in flight; one pool serves both passes.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.ingest.decode import DecodeError, Header, Target, decode, probe
from tasks.ingest.names import Names
from tasks.ingest.reading import Reading, Rejected
from tasks.ingest.safe_files import SourceFiles, UnreadableFile

POOL_MIN = 1500  # fewer images are read here: spawning workers costs about a second
CHUNK = 256  # images per task: big enough to amortise the transfer, small enough to balance

Item = tuple[Path, Header, tuple[int, int, int, int] | None]  # a file, its header, its ROI


@dataclass(frozen=True)
class Opener:
    """What a worker needs to open and name files as the reading does."""

    root: Path
    timeout_s: float
    base: Path
    prefix: str
    max_pixels: int

    @classmethod
    def of(cls, reading: Reading) -> Opener:
        return cls(reading.files.root, reading.files.timeout_s, reading.names.base,
                   reading.names.prefix, reading.cfg.max_image_pixels)

    def files(self) -> tuple[SourceFiles, Names]:
        return SourceFiles(self.root, self.timeout_s), Names(self.base, self.prefix)


def reason_of(exc: BaseException) -> str:
    """An error's message without the 'file: ' in front (the Rejected names the file)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def read_one(path: Path, files: SourceFiles, names, read):
    """read(fh) on one file, or a Rejected naming it when it cannot be opened or decoded."""
    shown = names(path)
    try:
        with files.open(path, shown) as fh:
            return read(fh)
    except UnreadableFile as exc:
        return Rejected(shown, reason_of(exc))
    except DecodeError as exc:
        return Rejected(shown, str(exc))


def probe_and_decode(fh, max_pixels: int, target: Target):
    """One open file: its header checked against the limits, then its pixels."""
    header = probe(fh, max_pixels)
    fh.seek(0)
    return decode(fh, header=header, target=target, roi=None)


def read_chunk(opener: Opener, target: Target, paths: list[Path]):
    """A worker's one-pass task (the target known beforehand): like decode_chunk, each file
    opened once for its header and its pixels."""
    files, names = opener.files()
    read = functools.partial(probe_and_decode, max_pixels=opener.max_pixels, target=target)
    return pixels_of([read_one(p, files, names, read) for p in paths], target) + (files.opened,)


def pixels_of(results: list, target: Target) -> tuple:
    """(pixels (k, C, H, W), hows, rejected by position) of decode results."""
    x = np.zeros((len(results), target.channels, *target.size), np.uint8)
    hows, rejected = [], {}
    for i, got in enumerate(results):
        if isinstance(got, Rejected):
            rejected[i] = got
            hows.append("")
        else:
            arr, how = got
            x[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            hows.append(how)
    return x, hows, rejected


def probe_chunk(opener: Opener, paths: list[Path]):
    """A worker's probe task: each file's Header or Rejected, and the files opened."""
    files, names = opener.files()
    return [read_one(p, files, names, lambda fh: probe(fh, opener.max_pixels)) for p in paths], \
        files.opened


def decode_chunk(opener: Opener, target: Target, items: list[Item]):
    """A worker's decode task: (pixels (k, C, H, W), hows, rejected by position, files opened)."""
    files, names = opener.files()
    results = [read_one(path, files, names, functools.partial(decode, header=header, target=target,
                                                              roi=roi))
               for path, header, roi in items]
    return pixels_of(results, target) + (files.opened,)


def workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


class ReadPool:
    """Probes and decodes a folder's files, in worker processes when there are enough."""

    def __init__(self, reading: Reading, n: int):
        self.reading = reading
        self.pool = None
        if workers() > 1 and n >= POOL_MIN:
            self.pool = ProcessPoolExecutor(workers(), mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> ReadPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def probe_all(self, paths: list[Path]) -> Iterator[Header | Rejected]:
        """Each file's header (limits checked before any decoding) or Rejected, in order."""
        reading = self.reading
        if self.pool is None:
            cap = reading.cfg.max_image_pixels
            yield from (read_one(p, reading.files, reading.names, lambda fh: probe(fh, cap))
                        for p in paths)
            return
        task = functools.partial(probe_chunk, Opener.of(reading))
        for got, opened in bounded_map(self.pool, task, chunked(paths)):
            reading.files.opened.extend(opened)
            yield from got

    def decode_all(self, items: list[Item], target: Target) -> Iterator[tuple | Rejected]:
        """Each item's (pixels (C, H, W), how) or Rejected, in order."""
        yield from self._pixels(decode_chunk, items, target)

    def read_all(self, paths: list[Path], target: Target) -> Iterator[tuple | Rejected]:
        """One pass, when the target does not wait for the headers: each file's (pixels, how)
        or Rejected, its header checked against the limits before it is decoded."""
        yield from self._pixels(read_chunk, paths, target)

    def _pixels(self, chunk_task, work: list, target: Target) -> Iterator[tuple | Rejected]:
        task = functools.partial(chunk_task, Opener.of(self.reading), target)
        mapped = map(task, chunked(work)) if self.pool is None \
            else bounded_map(self.pool, task, chunked(work))  # the same tasks, here or there
        for x, hows, rejected, opened in mapped:
            self.reading.files.opened.extend(opened)
            for i, how in enumerate(hows):
                yield rejected[i] if i in rejected else (x[i], how)


def chunked(items: list) -> list[list]:
    return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]


def bounded_map(pool: ProcessPoolExecutor, task, work: list, ahead: int | None = None) -> Iterator:
    """pool.map in order with at most `ahead` tasks submitted and not yet consumed (two per
    worker): results wait for a slow consumer in the workers' queue, not in memory."""
    from collections import deque

    ahead = ahead or 2 * workers()
    pending, items = deque(), iter(work)
    for item in items:
        pending.append(pool.submit(task, item))
        if len(pending) >= ahead:
            break
    while pending:
        done = pending.popleft().result()
        for item in items:  # refill one
            pending.append(pool.submit(task, item))
            break
        yield done
