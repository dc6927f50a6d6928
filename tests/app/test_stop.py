"""A stop signal to the command's process group (Ctrl-C, `timeout`, a service manager) ends it
within 10 s: exit 130/143, nothing left running, the lock free, and the next run resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_PARAMS, default_sigint, lock_is_free, write_params

pytestmark = pytest.mark.slow


def start(root: Path, log: Path, *command: str, api: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.Popen([sys.executable, "-m", "app.cli", "--workspace", str(root), *command],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True,  # its own group, as a terminal's job is
                            preexec_fn=default_sigint)


def wait_for(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {needle!r} in the output:\n{log.read_text(errors='replace')[-3000:]}")


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    began = time.monotonic()
    os.killpg(proc.pid, sig)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("still running 60 s after the signal")
    return code, time.monotonic() - began


def flow_run_state(log: Path) -> str:
    """The server's state type for the flow run the command's log links to."""
    from prefect.client.orchestration import get_client

    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", log.read_text(errors="replace")).group(1)
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value


@pytest.fixture
def api_url(request, prefect_harness):
    """None: the command starts its temporary server; else the session's running server."""
    if request.param == "temporary":
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.mark.parametrize("api_url", ["temporary", "server"], indirect=True)
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_run_stops_within_10_s_and_the_rerun_resumes(workspace, tmp_path, api_url, sig, code):
    write_params(workspace.root, {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 60}})
    log = tmp_path / "run.log"
    proc = start(workspace.root, log, "run", api=api_url)
    wait_for(log, "epoch 3/60", proc)

    rc, seconds = stop(proc, sig)

    out = log.read_text(errors="replace")
    assert rc == code and seconds < 10, out[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in out
    assert group_gone(proc.pid), "a process of the command's group is still running"
    assert lock_is_free(workspace.root)
    if api_url:  # the server outlived the command and knows the run ended
        assert flow_run_state(log) in ("CRASHED", "CANCELLED")
    if sig == signal.SIGTERM:  # once is enough for the slowest part: a rerun to the end
        write_params(workspace.root, {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 60}})
        again = start(workspace.root, tmp_path / "again.log", "run", api=api_url)
        assert again.wait(timeout=600) == 0
        assert "train: resumed from epoch" in (tmp_path / "again.log").read_text()


@pytest.mark.parametrize("api_url", ["temporary", "server"], indirect=True)
def test_retrain_stops_within_10_s_and_the_rerun_resumes(workspace, tmp_path, digits, api_url):
    """A champion from 900 digits, 600 more ingested; the retrain is stopped mid-training."""
    quick = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 12},
             "compress": {**TINY_PARAMS["compress"], "control": False,
                                         "prune": {"ratios": []}, "quantize": {"variants": []}}}
    write_params(workspace.root, quick)
    for name, part in (("part1", slice(0, 900)), ("part2", slice(900, 1500))):
        np.savez(tmp_path / f"{name}.npz", x=digits.x[part], y=digits.labels[part].astype(int))
    first = start(workspace.root, tmp_path / "run.log", "run", "--data", str(tmp_path / "part1.npz"),
                  api=api_url)
    assert first.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-2000:]
    more = start(workspace.root, tmp_path / "ingest.log", "ingest", str(tmp_path / "part2.npz"), api=api_url)
    assert more.wait(timeout=300) == 0, (tmp_path / "ingest.log").read_text()[-2000:]
    write_params(workspace.root, {**quick, "retrain": {"epochs": 60}})
    log = tmp_path / "retrain.log"
    proc = start(workspace.root, log, "retrain", api=api_url)
    wait_for(log, "epoch 3/60", proc)

    rc, seconds = stop(proc, signal.SIGTERM)

    out = log.read_text(errors="replace")
    assert rc == 143 and seconds < 10, out[-2000:]
    assert "stopped by SIGTERM" in out
    assert group_gone(proc.pid), "a process of the command's group is still running"
    assert lock_is_free(workspace.root)
    if api_url:
        assert flow_run_state(log) in ("CRASHED", "CANCELLED")
    again = start(workspace.root, tmp_path / "again.log", "retrain", api=api_url)
    assert again.wait(timeout=600) == 0, (tmp_path / "again.log").read_text()[-2000:]
    assert "retrain: resumed from epoch" in (tmp_path / "again.log").read_text()


@pytest.mark.parametrize("api_url", ["temporary", "server"], indirect=True)
def test_gan_run_stops_within_10_s_and_the_rerun_resumes(workspace, tmp_path, api_url):
    log = tmp_path / "gan.log"
    write_params(workspace.root, {**TINY_PARAMS, "gan": {"steps": 1500, "threads": 1}})
    proc = start(workspace.root, log, "gan", "run", api=api_url)
    wait_for(log, "gan step 100/", proc, timeout=400)

    rc, seconds = stop(proc, signal.SIGTERM)

    assert rc == 143 and seconds < 10, log.read_text(errors="replace")[-2000:]
    assert group_gone(proc.pid) and lock_is_free(workspace.root)
    rerun_log = tmp_path / "gan-rerun.log"
    rerun = start(workspace.root, rerun_log, "gan", "run", api=api_url)
    assert rerun.wait(timeout=600) == 0, rerun_log.read_text(errors="replace")[-2000:]
    assert re.search(r"gan: resumed from step [1-9]", rerun_log.read_text(errors="replace"))
