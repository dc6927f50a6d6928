"""Giving freed memory back to the system between blocks of work.

glibc raises its mmap threshold to the size of the largest block freed (up to 32 MB), so the
activations of large inference batches (onnxruntime's, torch's) then come from the heap, and
the freed heap stays in the process: scoring 62,000 images at 64 px in batches of 512 grew
the process by 3 GB (BENCHMARKS.md, issue 19). Stages that walk a split in blocks call
`release_free_memory` after each block: once the process has grown by SLACK_MB since the last
release, glibc returns its free pages (malloc_trim). Trimming after every block would cost
each block fresh pages again (up to 45% slower scoring on this VM); the slack keeps the peak
at a block's memory plus SLACK_MB, whatever the split's size. A no-op without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

SLACK_MB = 256
_released_at = [0]  # resident MB right after the last release


@functools.cache
def _trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def resident_mb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def release_free_memory() -> None:
    trim = _trim()
    if trim is None or not os.path.exists("/proc/self/statm"):
        return
    if resident_mb() > _released_at[0] + SLACK_MB:
        trim(0)
        _released_at[0] = resident_mb()
