"""How a command stops on a signal: SIGTERM unwinds as Ctrl-C does, and the exit code is the
shell's 128 + the signal's number."""

from __future__ import annotations

import signal
import sys


def interrupt(signum, frame):
    """A SIGTERM handler for a long-running command (watch, ui): stop as on Ctrl-C."""
    raise KeyboardInterrupt


class Stopped(BaseException):
    """A stop signal (SIGTERM) outside a flow run: unwind, so the lock and servers are released."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_stopped(signum, frame):
    raise Stopped(signum)


def stopped(command: str, signum: int) -> int:
    """The shell's code for a command ended by a signal: 128 + its number (SIGINT 130, SIGTERM 143)."""
    print(f"evergreen {command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + int(signum)
