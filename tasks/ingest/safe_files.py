"""Safe file access for every reader: regular files inside the source, a deadline, a record.

Every reader opens files through `SourceFiles.open`, so the same rules hold for each
format: FIFOs, sockets and devices are refused (never opened for a blocking read), links
that leave the source are refused, a read that takes too long is stopped, and what was
opened is recorded (quarantine copies exactly that, never the rest of a folder).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from evergreen.errors import BadInputError

MAX_DEADLINE_S = 86_400.0  # setitimer's range is bounded; ingest.read_timeout_s is capped here


class UnreadableFile(BadInputError):
    """One file that cannot be opened safely: a special file, a link out, a slow read."""


@dataclass
class Opened:
    """A file a reader opened: where it is, how it is shown, its size."""

    path: Path
    shown: str
    size: int


@dataclass
class SourceFiles:
    """Opens files under `root` for reading, and remembers each one it opened.

    `timeout_s` bounds the time spent inside one `open(...)` block (main thread only:
    elsewhere the special-file checks still hold, and a read cannot block on a FIFO).
    """

    root: Path
    timeout_s: float = 120.0
    opened: list[Opened] = field(default_factory=list)

    def __post_init__(self):
        self.real_root = Path(os.path.realpath(self.root))
        self._prefix = str(self.real_root).rstrip(os.sep) + os.sep

    def _holds(self, real: str) -> bool:
        return real == str(self.real_root) or real.startswith(self._prefix)

    def inside(self, path: Path) -> bool:
        """Whether path (links resolved) lies inside the source."""
        try:
            return self._holds(os.path.realpath(path))
        except (OSError, ValueError):
            return False

    def check(self, path: Path, shown: str) -> os.stat_result:
        """The file's stat when it is a regular file inside the source; else UnreadableFile."""
        if not self.inside(path):
            raise UnreadableFile(f"{shown}: a link that points outside the source (or loops); "
                                 "not followed")
        return self._regular(path, shown)

    @staticmethod
    def _regular(path: Path, shown: str) -> os.stat_result:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UnreadableFile(f"{shown}: cannot read: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(f"{shown}: not a regular file ({kind_of(st.st_mode)}); skipped")
        return st

    def _opened_inside(self, fd: int, path: Path) -> bool:
        """Whether the file behind fd lies inside the source: what was opened, not the name
        looked at before (Linux names it in /proc; elsewhere the name is resolved again)."""
        try:
            return self._holds(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return self.inside(path)

    @contextlib.contextmanager
    def open(self, path: Path, shown: str, record: bool = True) -> Iterator[IO[bytes]]:
        """The file's bytes, opened without blocking and refused unless regular and inside.

        Special files are refused from their stat, before any open; the file then opened is
        checked again (a swap in between is caught). `record=False` for a look at a file's
        first bytes (its kind), not a read of its data: quarantine copies only what was recorded.
        """
        self._regular(path, shown)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise UnreadableFile(f"{shown}: cannot read: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not self._opened_inside(fd, path):
            os.close(fd)
            why = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
                "a link that points outside the source (or loops); not followed"
            raise UnreadableFile(f"{shown}: {why}")
        os.set_blocking(fd, True)
        if record:
            self.opened.append(Opened(Path(path), shown, st.st_size))
        with os.fdopen(fd, "rb") as fh, deadline(self.timeout_s, shown):  # fd owned, then timed
            yield fh


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a message."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


class _Deadline(BaseException):  # not an Exception: a reader's broad `except` cannot hide it
    pass


@contextlib.contextmanager
def deadline(seconds: float, shown: str) -> Iterator[None]:
    """Stop the block with UnreadableFile after `seconds` (SIGALRM; main thread only).

    The alarm is disarmed before the handler is restored, and one that fires while disarming
    still ends as UnreadableFile, never as a stray exception.
    """
    usable = 0 < seconds <= MAX_DEADLINE_S and threading.current_thread() is threading.main_thread()
    if not usable or signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # nested: the outer one holds
        yield
        return
    armed = [True]

    def expire(signum, frame):
        if armed[0]:
            raise _Deadline

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            yield
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        raise UnreadableFile(f"{shown}: reading took longer than ingest.read_timeout_s "
                             f"({seconds:g} s); refused") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def text_lines(fh: IO[bytes], max_line_bytes: int, shown: str) -> Iterator[str]:
    """UTF-8 lines (BOM dropped) of a CSV, none longer than max_line_bytes, nor any record
    (lines joined by a quoted field's newlines): an endless line or record is refused after
    that many bytes, never read whole into memory."""
    number, record, open_quote = 0, 0, False
    while True:
        raw = fh.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        record = record + len(raw) if open_quote else len(raw)
        if len(raw) > max_line_bytes and not raw.endswith(b"\n") or record > max_line_bytes:
            what = "line" if not open_quote else "record (a quoted field over several lines)"
            raise BadInputError(f"{shown}: {what} {number} is longer than "
                                f"ingest.max_csv_line_bytes ({max_line_bytes} bytes); refused")
        open_quote ^= raw.count(b'"') % 2 == 1  # "" inside a field counts twice: parity holds
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{shown}: line {number} is not UTF-8 text (byte {exc.start})") from None
        yield line.removeprefix("\ufeff") if number == 1 else line
