"""`evergreen serve` and prefect.yaml: deployments, schedules, the ingest-event trigger, the lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from app.cli import main
from app.watch import EVENT, resource_id
from evergreen.config import ServeConfig
from evergreen.errors import BadInputError, ConfigError, WorkspaceBusyError
from evergreen.workspace import Workspace, workspace_lock
from tests.conftest import TINY_PARAMS, write_params

ROOT = Path(__file__).resolve().parents[2]


def ingest_event(ws: Workspace):
    from prefect.events.schemas.events import Resource

    return Resource({"prefect.resource.id": resource_id(ws), "prefect.resource.name": ws.root.name})


def test_deployments_have_their_names_schedules_and_trigger(workspace):
    from app.serve import build_deployments

    cfg = ServeConfig(retrain_cron="30 * * * *", timezone="Europe/Paris")
    training, retraining = build_deployments(workspace, cfg)
    assert (training.name, training.flow_name) == ("training-pipeline", "training-pipeline")
    assert (retraining.name, retraining.flow_name) == ("continual-retraining", "continual-retraining")
    assert [(s.schedule.cron, s.schedule.timezone) for s in training.schedules] == \
        [("0 2 * * *", "Europe/Paris")]
    assert [s.schedule.cron for s in retraining.schedules] == ["30 * * * *"]
    assert training.triggers == []
    (trigger,) = retraining.triggers
    assert trigger.expect == {EVENT}
    assert trigger.match.matches(ingest_event(workspace))
    assert not trigger.match.matches(ingest_event(Workspace(workspace.root.parent / "other")))
    assert trigger.parameters == {"workspace": str(workspace.root)}
    assert training.parameters == retraining.parameters == {"workspace": str(workspace.root)}
    assert training.entrypoint.endswith("app/serve.py:deployed_training")


def test_no_cron_means_no_schedule_and_a_bad_cron_names_its_key(workspace):
    from app.serve import build_deployments

    training, retraining = build_deployments(workspace, ServeConfig(training_cron=None))
    assert training.schedules == [] and retraining.schedules == []
    with pytest.raises(ConfigError, match=r"serve\.retrain_cron: '61 \* \* \* \*' is not a cron"):
        build_deployments(workspace, ServeConfig(retrain_cron="61 * * * *"))


def test_serve_without_a_server_says_how_to_get_one(workspace, monkeypatch, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # even inside the test harness
        assert main(["--workspace", str(workspace.root), "serve"]) == 2
    err = capsys.readouterr().err
    assert "PREFECT_API_URL is not set" in err and "evergreen ui" in err


def test_a_deployed_run_waits_for_the_workspace_lock(workspace):
    from app.serve import deployed_retraining, deployed_training

    write_params(workspace.root, {**TINY_PARAMS, "serve": {"lock_wait_seconds": 1.0}})
    with workspace_lock(workspace, "evergreen run", 0):
        for deployed in (deployed_training, deployed_retraining):
            start = time.monotonic()
            with pytest.raises(WorkspaceBusyError, match="workspace busy: evergreen run"):
                deployed.fn(str(workspace.root))  # the flow body: fails before touching anything
            assert time.monotonic() - start >= 1.0
    assert not workspace.batches.exists()


def test_prefect_yaml_describes_the_same_deployments():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events import DeploymentEventTrigger, DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from pydantic import TypeAdapter

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"training-pipeline", "continual-retraining"}
    for name, d in deployments.items():
        path, func = d["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}")
        assert flow.name == name  # the deployed entrypoints, which hold the workspace lock
        assert set(d["parameters"]) <= set(flow.parameters.properties)
        assert d["concurrency_limit"]["limit"] == 1
    (schedule,) = deployments["training-pipeline"]["schedules"]
    assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == \
        ServeConfig().training_cron
    (trigger,) = deployments["continual-retraining"]["triggers"]
    parsed = TypeAdapter(DeploymentTriggerTypes).validate_python(trigger)
    assert isinstance(parsed, DeploymentEventTrigger) and parsed.expect == {EVENT}
    assert parsed.match.matches(ingest_event(Workspace(Path("/any/workspace"))))
    assert parsed.parameters == {"workspace": "{{ event.payload.workspace }}"}


def wait_for_automation(deployment_id, timeout: float = 60.0) -> None:
    """Until the server lists the automation that owns the deployment's trigger."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            if client.read_resource_related_automations(f"prefect.deployment.{deployment_id}"):
                return
        time.sleep(0.5)
    raise AssertionError(f"no automation for deployment {deployment_id} within {timeout} s")


def trigger_trail() -> str:
    """What the server saw of the event and of the automation's action (for a failure message)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    names = [EVENT, "prefect.automation.triggered", "prefect.automation.action.triggered",
             "prefect.automation.action.executed", "prefect.automation.action.failed"]
    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=names)), limit=20)
    return "events seen: " + (", ".join(e.event for e in page.events) or "none")


def test_an_ingest_event_starts_the_retraining_deployment(prefect_harness, workspace):
    """On a real server: the deployment's automation turns the watcher's event into a run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from app.serve import build_deployments
    from app.watch import announce

    _, retraining = build_deployments(workspace, ServeConfig(training_cron=None))
    deployment_id = retraining.apply()
    try:
        # the session's earlier flows leave the server's event pipeline busy on 2 cores: wait for
        # the automation the deployment made to be loaded, and give the trigger two minutes
        wait_for_automation(deployment_id)
        announce(workspace, [{"batch_id": "b1", "added": 3, "source": "drop"}], None)
        only_ours = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        deadline, runs = time.monotonic() + 120, []
        while not runs and time.monotonic() < deadline:
            time.sleep(0.5)
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(deployment_filter=only_ours)
        assert runs, f"no continual-retraining run within 120 s of the event; {trigger_trail()}"
        assert runs[0].parameters == {"workspace": str(workspace.root)}
    finally:
        with get_client(sync_client=True) as client:
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
            client.delete_deployment(deployment_id)


def test_served_runs_refuse_parameters_outside_the_served_workspace(workspace, tmp_path, monkeypatch):
    from app.serve import SERVED_ENV, check_parameters

    check_parameters(str(tmp_path / "elsewhere"), None)  # not under `evergreen serve`: no check
    monkeypatch.setenv(SERVED_ENV, str(workspace.root))
    check_parameters(str(workspace.root), None)
    check_parameters(str(workspace.root), str(workspace.root / "drops" / "b.npz"))
    with pytest.raises(BadInputError, match="workspace=.*serves .* and runs nothing elsewhere"):
        check_parameters(str(tmp_path / "elsewhere"), None)
    with pytest.raises(BadInputError, match="data=.*outside the served workspace"):
        check_parameters(str(workspace.root), "/etc")
    with pytest.raises(BadInputError, match="data="):
        check_parameters(str(workspace.root), "../outside")


def test_a_served_training_run_for_another_workspace_touches_nothing(workspace, tmp_path, monkeypatch):
    from app.serve import SERVED_ENV, deployed_training

    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(SERVED_ENV, str(workspace.root))
    with pytest.raises(BadInputError, match="refused"):
        deployed_training.fn(str(other))
    assert list(other.iterdir()) == [] and not workspace.batches.exists()


@pytest.mark.slow
def test_evergreen_serve_refuses_a_flow_run_for_another_workspace(prefect_harness, workspace, tmp_path):
    """Anyone who can reach the server can start a deployment with any parameters: the run
    `evergreen serve` picks up for another workspace fails, naming the parameter, and
    neither workspace is touched."""
    import os
    import signal
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import default_sigint

    other = tmp_path / "other"
    other.mkdir()
    before = sorted(p.name for p in workspace.root.iterdir())
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "app.cli", "--workspace", str(workspace.root), "serve"]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                              start_new_session=True, preexec_fn=default_sigint)
    deployment = None
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while deployment is None and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.5)
                try:
                    deployment = client.read_deployment_by_name("training-pipeline/training-pipeline")
                except Exception:  # ObjectNotFound until serve has registered it
                    deployment = None
            assert deployment is not None, log.read_text()[-2000:]
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"workspace": str(other)})
            deadline = time.monotonic() + 120
            while not (state := client.read_flow_run(run.id).state).is_final():
                assert time.monotonic() < deadline, f"still {state.type.value}:\n{log.read_text()[-2000:]}"
                time.sleep(0.5)
        assert state.is_failed(), state
        assert "workspace=" in state.message and "refused" in state.message, state.message
        assert list(other.iterdir()) == []
        assert sorted(p.name for p in workspace.root.iterdir()) == before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if deployment is not None:
            with get_client(sync_client=True) as client:
                for flow_name in ("training-pipeline", "continual-retraining"):
                    name = f"{flow_name}/{flow_name}"
                    client.delete_deployment(client.read_deployment_by_name(name).id)
