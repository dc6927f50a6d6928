"""Bounded byte reads shared by the readers: a file's first bytes, gzip inflated as it is read
(a stream cut short still yields what it holds), and at most n bytes into one buffer."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from evergreen.errors import BadInputError
from tasks.ingest.reading import Reading

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


def first_bytes(path: Path, reading: Reading, n: int = 512) -> bytes:
    """The first bytes of a file, decompressed if it is gzip (raw if the stream is corrupt)."""
    with reading.files.open(path, reading.names(path), record=False) as fh:  # a look at its kind
        raw = fh.read(n)
        if raw[:2] != GZIP_MAGIC:
            return raw
        fh.seek(0)
        try:
            with gzip.GzipFile(fileobj=fh) as gz:
                return gz.read(n)
        except (OSError, EOFError, zlib.error):
            return raw


@contextmanager
def open_maybe_gz(path: Path, reading: Reading, shown: str) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped as they are read when it starts with the gzip magic."""
    with reading.files.open(path, shown) as raw:
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        yield _Gunzip(raw) if gz else raw


class _Gunzip:
    """A gzip stream read with zlib, so one cut short still yields every byte it holds."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.inflate, self.tail = raw, zlib.decompressobj(31), b""

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.inflate.eof:  # another member may follow (concatenated gzip files)
                self.tail, self.inflate = self.inflate.unused_data, zlib.decompressobj(31)
            data = self.inflate.unconsumed_tail or self.tail or self.raw.read(CHUNK)
            self.tail = b""
            if not data:  # the file ends: what zlib still holds, then stop
                out += self.inflate.flush()[: n - len(out)]
                break
            out += self.inflate.decompress(data, n - len(out))
        return bytes(out)


def read_upto(fh: IO[bytes], n: int, shown: str) -> bytearray:
    """At most n bytes, in chunks grown into one buffer: a header's claim never sizes an
    allocation by itself, and the data is held once (not as chunks and a joined copy)."""
    buf = bytearray()
    try:
        while len(buf) < n:
            chunk = fh.read(min(CHUNK, n - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (OSError, zlib.error) as exc:
        raise BadInputError(f"{shown}: corrupt gzip stream: {exc}") from None
    return buf
