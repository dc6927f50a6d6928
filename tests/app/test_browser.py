"""End to end as a user watches it: `evergreen ui`, `evergreen run` against it, the UI in Chromium.

Chromium is Debian's package (/usr/bin/chromium, `make test` installs it), driven by
Playwright for Python; Playwright's own browser download is never used. Screenshots go to
test-output/ (git-ignored) at the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from evergreen import stages as registry
from tests.conftest import TINY_PARAMS, write_params

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
STAGES = (*(entry.name for entry in registry.STAGES), "report")  # every stage's task, then the report
WAIT_MS = 120_000


def evergreen(root: Path, *args: str, env: dict | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def api(base: str, path: str, body: dict | None = None):
    """POST (filters) or GET a Prefect REST endpoint; the decoded JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """A workspace server started by `evergreen ui --background`, and one `evergreen run` on it."""
    root = tmp_path_factory.mktemp("browser") / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = evergreen(root, "ui", "--port", str(port), "--background")
    assert started.returncode == 0, started.stdout + started.stderr
    base = f"http://127.0.0.1:{port}"
    try:
        assert f"export PREFECT_API_URL={base}/api" in started.stdout
        env = {**os.environ, "PREFECT_API_URL": f"{base}/api"}
        run = evergreen(root, "run", env=env, timeout=1500)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        yield root, base, run
    finally:
        stopped = evergreen(root, "ui", "--stop")
        assert "stopped the Prefect server" in stopped.stdout, stopped.stdout + stopped.stderr


def test_the_run_is_recorded_by_the_workspace_server(served_run):
    root, base, _ = served_run
    assert (root / ".evergreen" / "prefect" / "prefect.db").exists()
    flows = api(base, "/api/flow_runs/filter", {})
    assert [f["state_type"] for f in flows] == ["COMPLETED"]
    flow_run = flows[0]["id"]
    tasks = api(base, "/api/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run]}}})
    assert sorted(t["name"].rsplit("-", 1)[0] for t in tasks) == sorted(STAGES)
    assert {t["state_type"] for t in tasks} == {"COMPLETED"}
    logs = api(base, "/api/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run]}}, "limit": 200})
    assert any("epoch 1/4" in entry["message"] for entry in logs), "per-epoch training logs"
    latest = {a["key"]: a for a in api(base, "/api/artifacts/latest/filter", {})}
    for key in ("training-run-summary", "training-metrics", "compression-pareto", "data-validation",
                "data-validation-report", "run-report", "training-progress"):
        assert key in latest, key
    assert latest["training-progress"]["data"] == 100.0
    assert "done, 4 epochs" in latest["training-progress"]["description"]
    assert latest["run-report"]["data"].startswith("[") and "file://" in latest["run-report"]["data"]


def test_the_run_leaves_its_html_reports_and_dvc_plots(served_run, tmp_path):
    root, _, _ = served_run
    page = (root / "reports" / "run.html").read_text()
    assert page.count('src="data:image/png;base64,') == 6
    assert (root / "reports" / "validation.html").exists()
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "plots")],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "error" not in (proc.stdout + proc.stderr).lower(), proc.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    for plot in ("train_csv", "compress_csv", "confusion_csv", "roc_csv", "roc_png", "predictions_png"):
        assert f"reports_plots_{plot}" in page or f"reports_figures_{plot}" in page, plot


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A page of headless Debian Chromium with a new, empty profile."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `apt-get install -y chromium` could not run here")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()


def screenshot(page, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_ui_shows_the_flow_run_its_task_runs_and_the_summary(served_run, browser_page):
    root, base, _ = served_run
    page = browser_page
    flow_run = api(base, "/api/flow_runs/filter", {})[0]
    page.goto(f"{base}/runs/flow-run/{flow_run['id']}", timeout=WAIT_MS)
    page.get_by_text("training-pipeline").first.wait_for(timeout=WAIT_MS)
    page.get_by_text(flow_run["name"]).first.wait_for(timeout=WAIT_MS)
    page.get_by_text("Completed").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("Task Runs", exact=True).first.click()  # the flow run page's tab
    for stage in STAGES:  # the page lists a task run for each stage, by the stage's name
        page.get_by_text(f"{stage}-").first.wait_for(timeout=WAIT_MS)
    screenshot(page, "prefect-flow-run.png")

    summary = {a["key"]: a for a in api(base, "/api/artifacts/latest/filter", {})}["training-run-summary"]
    page.goto(f"{base}/artifacts/artifact/{summary['latest_id']}", timeout=WAIT_MS)
    page.get_by_text("Run summary: promoted").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("min_accuracy").first.wait_for(timeout=WAIT_MS)  # the gate table
    screenshot(page, "prefect-run-summary.png")
    shutil.copy(root / "reports" / "run.html", OUTPUT / "run.html")
