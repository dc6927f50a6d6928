"""`evergreen ui`: where the server listens and keeps its database, starting and stopping it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from app.cli import main
from app.ui import Server, healthy, port_free, resolve_server, server_env, start_server, stop_ui
from evergreen.config import UiConfig
from evergreen.errors import BadInputError
from evergreen.workspace import Workspace
from tests.conftest import TINY_PARAMS, default_sigint, write_params


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_address_comes_from_arguments_then_env_then_params(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    monkeypatch.delenv("EVERGREEN_UI_HOST", raising=False)
    monkeypatch.delenv("EVERGREEN_UI_PORT", raising=False)
    assert (resolve_server(ws, UiConfig(), None, None).url) == "http://127.0.0.1:4200"
    assert resolve_server(ws, UiConfig(port=4300), None, None).port == 4300
    monkeypatch.setenv("EVERGREEN_UI_PORT", "4400")
    monkeypatch.setenv("EVERGREEN_UI_HOST", "::1")
    server = resolve_server(ws, UiConfig(port=4300), None, None)
    assert server.api_url == "http://[::1]:4400/api"
    assert resolve_server(ws, UiConfig(), "0.0.0.0", 4500).api_url == "http://0.0.0.0:4500/api"
    monkeypatch.setenv("EVERGREEN_UI_PORT", "http")
    with pytest.raises(BadInputError, match="EVERGREEN_UI_PORT='http'"):
        resolve_server(ws, UiConfig(), None, None)
    with pytest.raises(BadInputError, match="--port 70000"):
        resolve_server(ws, UiConfig(), None, 70000)


def test_ui_section_rejects_unknown_keys_and_bad_ports(tmp_path):
    from evergreen.config import load_config
    from evergreen.errors import ConfigError

    path = tmp_path / "params.yaml"
    path.write_text("ui:\n  port: 0\n")
    with pytest.raises(ConfigError, match="ui.port"):
        load_config(path)
    path.write_text("ui:\n  prot: 4200\n")
    with pytest.raises(ConfigError, match="ui.prot: unknown key"):
        load_config(path)


def test_server_keeps_its_database_in_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:1/api")
    server = resolve_server(Workspace(tmp_path), UiConfig(), None, 4999)
    env = server_env(server)
    home = tmp_path / ".evergreen" / "prefect"
    assert env["PREFECT_HOME"] == str(home)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1" and env["PREFECT_SERVER_API_PORT"] == "4999"
    assert "PREFECT_API_URL" not in env  # the server is not a client of another server


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        server = Server("127.0.0.1", port, tmp_path / "prefect")
        with pytest.raises(BadInputError, match=f"127.0.0.1:{port}: port already in use"):
            start_server(server)
        assert not healthy(server, timeout=0.5)
    assert not (tmp_path / "prefect").exists()


def test_stop_without_a_server_says_so_and_clears_a_stale_record(tmp_path, capsys):
    server = Server("127.0.0.1", free_port(), tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    server.state.write_text(json.dumps({"pid": dead.pid, "url": server.url}))
    assert stop_ui(server) == 0
    assert "no Prefect server of this workspace is running" in capsys.readouterr().out
    assert not server.state.exists()


def test_stop_leaves_alone_a_recorded_pid_that_is_not_a_prefect_server(tmp_path, capsys):
    server = Server("127.0.0.1", free_port(), tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.state.write_text(json.dumps({"pid": other.pid, "url": server.url}))  # a recycled pid
        assert stop_ui(server) == 0
        assert "no Prefect server of this workspace is running" in capsys.readouterr().out
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_cli_ui_rejects_background_with_stop(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--workspace", str(tmp_path), "ui", "--background", "--stop"])
    assert exc.value.code == 2


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """stdout lines of `proc` until one holds `needle` (or the process ends)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"no {needle!r} in the output:\n{''.join(seen)}")


@pytest.mark.slow
def test_foreground_ui_answers_then_ctrl_c_stops_the_server(tmp_path):
    port = free_port()
    env = {**os.environ, "EVERGREEN_UI_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--workspace", str(tmp_path), "ui"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=default_sigint)
    try:
        out = read_until(proc, "export PREFECT_API_URL=", timeout=240)
        assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in out
        server = Server("127.0.0.1", port, tmp_path / ".evergreen" / "prefect")
        assert healthy(server)
        assert (tmp_path / ".evergreen" / "prefect" / "prefect.db").exists()
        assert json.loads(server.state.read_text())["port"] == port
        proc.send_signal(signal.SIGINT)
        try:  # the server gets 20 s to stop, then SIGKILL; a loaded CI box adds its own delay
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"`evergreen ui` still running 180 s after Ctrl-C; its output:\n"
                        f"{out}{proc.communicate()[0]}")
        assert code == 0
        assert not healthy(server, timeout=1) and port_free("127.0.0.1", port)
        assert not server.state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.4", False), ("myhost", False)])
def test_only_loopback_addresses_are_private(host, loopback):
    from app.ui import is_loopback

    assert is_loopback(host) is loopback


def test_a_public_host_warns_before_the_server_starts(tmp_path, monkeypatch, capsys):
    import app.ui as ui

    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    monkeypatch.setattr(ui, "start_server", lambda server: (_ for _ in ()).throw(SystemExit(9)))
    with pytest.raises(SystemExit):
        ui.run_ui(Server("0.0.0.0", free_port(), tmp_path / "home"))
    err = capsys.readouterr().err
    assert "WARNING: ui.host 0.0.0.0 is not a loopback address" in err
    assert "no authentication: set PREFECT_SERVER_API_AUTH_STRING" in err
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:secret")
    assert "basic auth is on" in ui.exposure_warning(Server("0.0.0.0", 4200, tmp_path))
    assert ui.exposure_warning(Server("127.0.0.1", 4200, tmp_path)) is None


def test_the_database_is_private_to_its_user(tmp_path):
    from app.ui import private_database

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "prefect.db").write_bytes(b"")
    os.chmod(home / "prefect.db", 0o644)
    db = private_database(Server("127.0.0.1", 4200, home))
    assert (os.stat(home).st_mode & 0o777, os.stat(db).st_mode & 0o777) == (0o700, 0o600)


@pytest.mark.slow
def test_with_an_auth_string_anonymous_writes_are_refused(tmp_path):
    """A real server started by `evergreen ui` with PREFECT_SERVER_API_AUTH_STRING: an
    anonymous POST /api/variables/ gets 401, the same with basic auth is created."""
    import base64
    import urllib.error
    import urllib.request

    port = free_port()
    env = {**os.environ, "EVERGREEN_UI_PORT": str(port),
           "PREFECT_SERVER_API_AUTH_STRING": "admin:s3cret"}
    ui = [sys.executable, "-m", "app.cli", "--workspace", str(tmp_path), "ui"]
    started = subprocess.run([*ui, "--background"], env=env, capture_output=True, text=True,
                             timeout=240)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "export PREFECT_API_AUTH_STRING=" in started.stdout
        url = f"http://127.0.0.1:{port}/api/variables/"
        body = json.dumps({"name": "evergreen_probe", "value": "x"}).encode()

        def post(headers: dict) -> int:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post({}) == 401
        assert post({"Authorization": "Basic " + base64.b64encode(b"nobody:guess").decode()}) == 401
        good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        assert post(good) == 201
        # a run with the client's auth string works, and the server lists it
        ws = tmp_path / "ws"
        ws.mkdir()
        write_params(ws, TINY_PARAMS)
        client = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                  "PREFECT_API_AUTH_STRING": "admin:s3cret"}
        run = subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(ws), "run"],
                             env=client, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        listed = urllib.request.Request(f"http://127.0.0.1:{port}/api/flow_runs/filter", data=b"{}",
                                        method="POST", headers={"Content-Type": "application/json",
                                                                **good})
        with urllib.request.urlopen(listed, timeout=30) as resp:
            runs = json.loads(resp.read())
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
    finally:
        subprocess.run([*ui, "--stop"], env=env, capture_output=True, timeout=120)
