"""A temporary Prefect API for one command's flows, started before Prefect is imported so it
boots while the command loads (about 10 s off every `evergreen run`, issue 8)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

from app.console import hide_user_errors
from app.ui import Server, healthy
from evergreen.errors import EvergreenError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process (Linux): the kernel stops it when the command dies, even by
    SIGKILL, so no temporary server outlives its command."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def temporary_api():
    """The Prefect API for one command's flows; yields `ready(preload=())`, to call before the
    flow.

    With PREFECT_API_URL set (in the environment, a Prefect profile or a test harness) that
    server is used and `ready` does nothing. Otherwise a temporary server (Prefect's own
    ephemeral app and database) starts before Prefect is even imported here, so it boots
    while this process loads, and it is told to stop at the end without waiting: Prefect's
    own temporary server would start only when the flow starts, after loading its whole
    server app into this process, and wait up to 5 s for it to stop. Together that is ~10 s
    of every `evergreen run` (issue 8). The console no longer shows Prefect's traceback of
    an EvergreenError, which the command prints as one line (app/console.py).
    """
    # a fresh process with no URL in its environment starts the server at once; if Prefect's
    # settings (a profile) name a server after all, that one is used and this one stopped
    early = None if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules else \
        start_temporary_server()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    hide_user_errors()  # the command prints its EvergreenError as one line; Prefect need not
    if PREFECT_API_URL.value():
        if early:
            early[1].terminate()
            early[2].close()
        yield lambda preload=(): None
        return
    server, proc, log = early or start_temporary_server()

    def ready(preload: tuple[str, ...] = ()) -> None:
        wait_ready(server, proc, log, preload)

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield ready
            finally:  # what the flow logged and emitted goes out before the server stops
                drain_prefect_clients()
    finally:
        proc.terminate()  # it finishes its own shutdown; nothing waits for it
        log.close()


def wait_ready(server: Server, proc: subprocess.Popen, log: typing.IO[bytes],
               preload: tuple[str, ...] = ()) -> None:
    """Wait for the server; meanwhile import `preload`, modules the flow will load anyway
    (this process is idle while the server boots on the other core)."""
    import importlib

    for module in preload:
        if healthy(server, timeout=0.2):
            break
        importlib.import_module(module)
    limit = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
    start = time.monotonic()
    while not healthy(server, timeout=1.0):
        if proc.poll() is not None or time.monotonic() - start > limit:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise EvergreenError(f"the temporary Prefect server on {server.url} did not start "
                                 f"(exit code {proc.poll()}); set PREFECT_API_URL to a running "
                                 f"server or run `evergreen ui`:\n{tail}")
        time.sleep(0.1)


def start_temporary_server() -> tuple[Server, subprocess.Popen, typing.IO[bytes]]:
    """Prefect's ephemeral server app (no UI) on a free local port; its output to a temp file."""
    port, log = free_port(), tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
             "PREFECT__SERVER_FINAL": "1"},
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        # its own session: a stop signal to the command's process group (Ctrl-C, `timeout`, a
        # service manager) leaves it up long enough to record the flow run as crashed; it
        # stops when the command does (terminate below, or the parent-death signal)
        start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    return Server("127.0.0.1", port, Path(tempfile.gettempdir())), proc, log


def drain_prefect_clients(timeout: float = 5.0) -> None:
    """Send the logs and events Prefect still queues (its workers would otherwise retry
    against a stopped server for a minute at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)
