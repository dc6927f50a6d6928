"""A folder's images decoded in worker processes, one per core, in chunks; a small folder (or a
machine of one core) decodes in this process.

Workers are spawned, not forked: the caller may hold threads (Prefect's, torch's), and a fork
copies their locks mid-use. Each worker opens files through its own SourceFiles with the same
checks and read timeout, and sends back the pixels of its chunk, the files it opened (for the
quarantine's record) and the files it refused. Results come back in order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.ingest.decode import DecodeError, Header, Target, decode
from tasks.ingest.names import Names
from tasks.ingest.reading import Reading, Rejected
from tasks.ingest.safe_files import SourceFiles, UnreadableFile

POOL_MIN = 1500  # fewer images decode here: spawning workers costs about a second
CHUNK = 256  # images per task: big enough to amortise the transfer, small enough to balance

Item = tuple[Path, Header, tuple[int, int, int, int] | None]  # a file, its header, its ROI


@dataclass(frozen=True)
class Opener:
    """What a worker needs to open and name files as the reading does."""

    root: Path
    timeout_s: float
    base: Path
    prefix: str

    @classmethod
    def of(cls, reading: Reading) -> Opener:
        return cls(reading.files.root, reading.files.timeout_s, reading.names.base,
                   reading.names.prefix)


def reason_of(exc: BaseException) -> str:
    """An error's message without the 'file: ' in front (the Rejected names the file)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def decode_one(item: Item, target: Target, files: SourceFiles, names) -> tuple:
    """(pixels as (C, H, W), how) or a Rejected naming the file."""
    path, header, roi = item
    shown = names(path)
    try:
        with files.open(path, shown) as fh:
            arr, how = decode(fh, header=header, target=target, roi=roi)
    except UnreadableFile as exc:
        return Rejected(shown, reason_of(exc))
    except DecodeError as exc:
        return Rejected(shown, str(exc))
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), how


def decode_chunk(opener: Opener, target: Target, items: list[Item]):
    """A worker's task: (pixels (k, C, H, W), hows, rejected by position, files opened)."""
    files = SourceFiles(opener.root, opener.timeout_s)
    names = Names(opener.base, opener.prefix)
    x = np.zeros((len(items), target.channels, *target.size), np.uint8)
    hows, rejected = [], {}
    for i, item in enumerate(items):
        got = decode_one(item, target, files, names)
        if isinstance(got, Rejected):
            rejected[i], hows = got, hows + [""]
        else:
            x[i], hows = got[0], hows + [got[1]]
    return x, hows, rejected, files.opened


def decode_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def decode_all(items: list[Item], target: Target, reading: Reading) -> Iterator[tuple]:
    """Each item's (pixels, how) or Rejected, in order."""
    workers = decode_workers()
    if workers == 1 or len(items) < POOL_MIN:
        for item in items:
            yield decode_one(item, target, reading.files, reading.names)
        return
    import multiprocessing

    task = functools.partial(decode_chunk, Opener.of(reading), target)
    parts = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for x, hows, rejected, opened in pool.map(task, parts):
            reading.files.opened.extend(opened)
            for i, how in enumerate(hows):
                yield rejected[i] if i in rejected else (x[i], how)
