"""The `evergreen` command: parse arguments, call one function, map errors to exit codes.

Heavy libraries (torch, prefect, great_expectations) load inside the commands, so
`evergreen --help` answers at once. The parser is app/parser.py, the commands app/commands.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import typing

from app.commands import COMMANDS, WRITERS
from app.parser import build_parser
from app.signals import Stopped, raise_stopped, stopped
from evergreen.errors import EvergreenError


def setup_logging() -> None:
    """Stage modules log to `evergreen.*`; Prefect forwards those loggers to the UI."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "evergreen")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # without PREFECT_API_URL each command starts a temporary server; on a busy machine that
    # takes longer than Prefect's default 20 s wait
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("evergreen").setLevel(logging.INFO)


def os_error_message(exc: OSError) -> str:
    """'PATH: No space left on device (ENOSPC)' and what to do; files are replaced only whole."""
    import errno

    where = exc.filename or "a workspace file"
    code = errno.errorcode.get(exc.errno or 0, "")
    hint = {"ENOSPC": "free some disk space", "EDQUOT": "free some disk space",
            "EACCES": "make it writable for this user", "EPERM": "make it writable for this user",
            "EROFS": "use a writable workspace"}.get(code, "check the disk and permissions")
    return (f"{where}: {exc.strerror or exc}{f' ({code})' if code else ''}; {hint}, then run "
            "again (files already there are unchanged: they are only ever replaced whole)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from evergreen.workspace import resolve_workspace, workspace_lock

    try:
        ws = resolve_workspace(args.workspace)
        if hasattr(args, "overrides"):  # bad params or --set fail before a command loads Prefect
            from evergreen.config import load_config

            load_config(ws.params, args.overrides)
        if args.command not in WRITERS:
            return COMMANDS[args.command](args, ws)
        with workspace_lock(ws, f"evergreen {args.command}", args.wait):
            return COMMANDS[args.command](args, ws)
    except EvergreenError as exc:
        print(f"evergreen {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, permissions: the environment, not the input
        print(f"evergreen {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return EvergreenError.exit_code
    except (KeyboardInterrupt, Stopped) as exc:
        return stopped(args.command, getattr(exc, "signum", signal.SIGINT))
    except BaseException as exc:
        prefect_exceptions = sys.modules.get("prefect.exceptions")
        if prefect_exceptions and isinstance(exc, prefect_exceptions.TerminationSignal):
            return stopped(args.command, exc.signal)  # SIGTERM inside a flow run: marked crashed
        raise


def exit_now(rc: int) -> typing.NoReturn:
    """Exit with `rc` after the exit handlers and output flushes, but without the interpreter's
    module teardown: once torch, torchao and onnx are loaded that takes 1-3 s of every run."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's shutdown, Prefect's drains, temporary folders
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(rc)


def console() -> None:
    """The `evergreen` command."""
    # OpenMP threads that spin while they wait for each other collapse beside a busy process:
    # a 2-thread training step took 995 ms against 71 ms with sleeping waits (and 63 ms on one
    # thread). Set before torch loads its OpenMP runtime; stage and DDP processes inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # SIGTERM (`timeout`, a service manager, `kill`) unwinds as Ctrl-C does: the lock is
    # released, the temporary server stopped, exit 143; inside a flow run Prefect's own handler
    # takes over and records the run as crashed first
    signal.signal(signal.SIGTERM, raise_stopped)
    exit_now(main())


if __name__ == "__main__":
    console()
