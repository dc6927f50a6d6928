"""`evergreen ui`: a local Prefect server whose SQLite database lives in the workspace.

The server runs as `python -m prefect server start` in its own process group, bound to
127.0.0.1 by default; flows run elsewhere find it through PREFECT_API_URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.signals import interrupt
from evergreen.config import UiConfig
from evergreen.errors import BadInputError, EvergreenError
from evergreen.workspace import Workspace, atomic_write_text

STATE_FILE = "server.json"


@dataclass(frozen=True)
class Server:
    """Where a server listens and where its files are."""

    host: str
    port: int
    home: Path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def state(self) -> Path:
        return self.home / STATE_FILE


def prefect_home(ws: Workspace) -> Path:
    """The server's PREFECT_HOME and database folder: untracked workspace state."""
    return ws.state / "prefect"


def resolve_server(ws: Workspace, cfg: UiConfig, host: str | None, port: int | None) -> Server:
    """--host/--port, else EVERGREEN_UI_HOST/EVERGREEN_UI_PORT, else params.yaml's `ui`."""
    host = host or os.environ.get("EVERGREEN_UI_HOST") or cfg.host
    if port is None and os.environ.get("EVERGREEN_UI_PORT"):
        raw = os.environ["EVERGREEN_UI_PORT"]
        if not raw.isdigit():
            raise BadInputError(f"EVERGREEN_UI_PORT={raw!r}: expected a port number 1-65535")
        port = int(raw)
    port = cfg.port if port is None else port
    if not 1 <= port <= 65535:
        raise BadInputError(f"--port {port}: expected a port number 1-65535")
    return Server(host, port, prefect_home(ws))


def server_env(server: Server) -> dict[str, str]:
    """The server's environment: its home and SQLite file in the workspace, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env.update(PREFECT_HOME=str(server.home),
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{server.home / 'prefect.db'}",
               PREFECT_SERVER_API_HOST=server.host, PREFECT_SERVER_API_PORT=str(server.port),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_SHOW_PROMOTIONAL_CONTENT="false")
    return env


AUTH_ENV, CLIENT_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it resolves to whatever the network says
        return False


def exposure_warning(server: Server) -> str | None:
    """The warning for a server others can reach, None on loopback."""
    if is_loopback(server.host):
        return None
    auth = ("basic auth is on (PREFECT_SERVER_API_AUTH_STRING)" if os.environ.get(AUTH_ENV) else
            "and no authentication: set PREFECT_SERVER_API_AUTH_STRING=user:password before "
            "`evergreen ui`, and PREFECT_API_AUTH_STRING to the same in every client")
    return (f"WARNING: ui.host {server.host} is not a loopback address: anyone who reaches "
            f"port {server.port} can read every run and set the parameters `evergreen serve` "
            f"runs with, {auth}")


def private_database(server: Server) -> Path:
    """The server's folder (0700) and SQLite file (0600): runs, logs and parameters are
    readable by this user only. SQLite gives its journal files the database's mode."""
    server.home.mkdir(parents=True, exist_ok=True)
    os.chmod(server.home, 0o700)
    db = server.home / "prefect.db"
    os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(db, 0o600)
    return db


def healthy(server: Server, timeout: float = 2.0) -> bool:
    """True when the server's /api/health answers."""
    try:
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: closed connections in TIME_WAIT do not block, a listener does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start_server(server: Server) -> subprocess.Popen:
    """Launch the server in its own process group (a terminal's Ctrl-C reaches us, not it)."""
    if not port_free(server.host, server.port):
        raise BadInputError(f"{server.host}:{server.port}: port already in use; choose another with "
                            "--port N (or ui.port in params.yaml, or EVERGREEN_UI_PORT)")
    private_database(server)
    with open(server.log, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", server.host,
             "--port", str(server.port)],
            env=server_env(server), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)


def wait_until_healthy(server: Server, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    """Poll /api/health; the seconds it took. A server that exits or stays mute is an error."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise EvergreenError(f"prefect server exited with code {proc.returncode} before it "
                                 f"answered; its log: {server.log}\n{log_tail(server.log)}")
        if healthy(server):
            return time.monotonic() - start
        time.sleep(0.5)
    stop_process(proc.pid)
    raise EvergreenError(f"prefect server did not answer {server.api_url}/health within "
                         f"{timeout:.0f} s; its log: {server.log}\n{log_tail(server.log)}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(pid: int, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not yet reaped, is not alive)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:  # our child, and it exited: now reaped
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: signal 0 went through
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def runs_prefect_server(pid: int) -> bool:
    """The process is alive and is a Prefect server (a recycled pid is not ours to stop)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: trust the record
    return b"prefect" in cmdline and b"server" in cmdline


def read_state(server: Server) -> dict | None:
    """The recorded server of this workspace, when it still runs."""
    try:
        state = json.loads(server.state.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return state if runs_prefect_server(pid) else None


def announce(server: Server, seconds: float | None) -> None:
    took = f" (ready in {seconds:.1f} s)" if seconds is not None else ""
    auth = (f"\n  export {CLIENT_AUTH_ENV}=<the user:password in {AUTH_ENV}>"
            if os.environ.get(AUTH_ENV) else "")
    print(f"Prefect UI: {server.url}{took}\n"
          f"database: {server.home / 'prefect.db'}\n"
          f"log: {server.log}\n"
          f"in another terminal, then `evergreen run`:\n"
          f"  export PREFECT_API_URL={server.api_url}{auth}", flush=True)


def run_ui(server: Server, background: bool = False) -> int:
    """Start the server and wait until it answers; stay in the foreground unless `background`."""
    running = read_state(server)
    if running:
        print(f"a Prefect server of this workspace already runs (pid {running['pid']})")
        announce(Server(running["host"], running["port"], server.home), None)
        return 0
    warning = exposure_warning(server)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    proc = start_server(server)
    try:
        seconds = wait_until_healthy(server, proc)
    except KeyboardInterrupt:  # Ctrl-C while it starts: leave nothing behind
        stop_process(proc.pid)
        raise
    try:
        atomic_write_text(server.state, json.dumps({"pid": proc.pid, "host": server.host,
                                                    "port": server.port, "url": server.url}))
        announce(server, seconds)
        if background:
            print(f"running in the background (pid {proc.pid}); stop it with `evergreen ui --stop`")
            return 0
        return foreground(server, proc)
    except KeyboardInterrupt:  # Ctrl-C after the URL was printed, before the wait began
        print("stopping the Prefect server…", flush=True)
        stop_process(proc.pid)
        server.state.unlink(missing_ok=True)
        return 0


def foreground(server: Server, proc: subprocess.Popen) -> int:
    """Wait on the server until Ctrl-C (or SIGTERM), then stop it."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, interrupt)
        print("Ctrl-C stops it.", flush=True)
        proc.wait()
        print(f"prefect server exited with code {proc.returncode}; its log: {server.log}")
        return EvergreenError.exit_code
    except KeyboardInterrupt:
        print("stopping the Prefect server…", flush=True)
        stop_process(proc.pid)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.state.unlink(missing_ok=True)


def stop_ui(server: Server) -> int:
    """`evergreen ui --stop`: stop the workspace's background server."""
    running = read_state(server)
    if not running:
        server.state.unlink(missing_ok=True)
        print(f"no Prefect server of this workspace is running ({server.state} names none alive)")
        return 0
    stop_process(int(running["pid"]))
    server.state.unlink(missing_ok=True)
    print(f"stopped the Prefect server at {running['url']} (pid {running['pid']})")
    return 0
