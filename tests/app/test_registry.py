"""The registry's history: forced promotion, rollback, audit entries, atomic switches, status."""

import json

import pytest

from app.cli import main
from evergreen.errors import BadInputError, EvergreenError
from evergreen.workspace import Workspace, write_json
from mains.versions import load_registry, store_version
from tasks.promote import champion_entry, empty_registry, force_promote, record, rollback
from tests.conftest import fail_registry_writes


def candidate(version, verdict, accuracy=0.97):
    return {"version": version, "verdict": verdict, "reasons": [] if verdict == "promoted" else
            ["max_forgetting: 0.02 is not <= 0.01"], "run_id": f"run-{version}",
            "time": f"2026-01-0{version[1]}T00:00:00+00:00", "data_version": f"d{version[1]}.dir",
            "role": "teacher", "arch": "cnn", "metrics": {"accuracy": accuracy, "f1_macro": accuracy}}


@pytest.fixture
def registry():
    """v1 promoted, v2 promoted over it, v3 rejected."""
    reg = empty_registry()
    for v in ("v1", "v2", "v3"):
        reg["versions"][v] = {"sha256": v * 8, "path": f"models/versions/{v}", "created_at": "t"}
    record(reg, candidate("v1", "promoted"), True, "passed all gates in run run-v1")
    record(reg, candidate("v2", "promoted"), True, "passed all gates in run run-v2")
    record(reg, candidate("v3", "rejected", 0.5), False, "")
    return reg


def test_promotions_are_audited_with_who_when_and_why(registry):
    first, second = registry["history"]
    assert (first["action"], first["champion"], first["previous"]) == ("promote", "v1", None)
    assert (second["champion"], second["previous"], second["run_id"]) == ("v2", "v1", "run-v2")
    assert second["by"] and second["reason"] == "passed all gates in run run-v2"


def test_forced_promote_then_rollback_round_trips_with_two_audit_entries(registry):
    force_promote(registry, "v3", "hotfix for class 7, approved by QA")
    assert registry["champion"] == "v3"
    rollback(registry, "QA found a regression")
    assert registry["champion"] == "v2"
    forced, back = registry["history"][-2:]
    assert (forced["action"], forced["champion"], forced["previous"]) == ("force-promote", "v3", "v2")
    assert forced["reason"] == "hotfix for class 7, approved by QA" and forced["by"]
    assert (back["action"], back["champion"], back["previous"]) == ("rollback", "v2", "v3")
    assert back["reason"] == "QA found a regression"


def test_rollback_walks_back_the_chain_and_stops_at_the_first_champion(registry):
    rollback(registry, "")
    assert registry["champion"] == "v1"
    assert registry["history"][-1]["reason"] == "rollback from v2"
    with pytest.raises(BadInputError, match="v1 has no previous champion"):
        rollback(registry, "again")
    assert registry["champion"] == "v1" and len(registry["history"]) == 3


@pytest.mark.parametrize("version, reason, message", [
    ("v9", "why", "no such version in the registry (known: v1, v2, v3)"),
    ("v3", "  ", "--reason must say why"),
    ("v2", "why", "already the champion"),
])
def test_bad_forced_promotions_change_nothing(registry, version, reason, message):
    before = json.dumps(registry)
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        force_promote(registry, version, reason)
    assert json.dumps(registry) == before


def test_rollback_with_no_champion_is_an_error():
    with pytest.raises(BadInputError, match="champion none"):
        rollback(empty_registry(), "")


def test_champion_entry_is_the_latest_entry_of_that_version(registry):
    assert champion_entry(registry)["version"] == "v2"
    force_promote(registry, "v3", "manual")
    assert champion_entry(registry)["verdict"] == "rejected"  # forced past its gates
    assert champion_entry(registry, "v9") is None


def test_a_compressed_version_keeps_its_teacher(tmp_path):
    model, teacher = tmp_path / "selected", tmp_path / "teacher"
    for folder, files in ((model, ("model.onnx", "model.json")),
                          (teacher, ("model.safetensors", "model.json"))):
        folder.mkdir()
        for name in files:
            (folder / name).write_text(f"{folder.name}/{name}")
    reg = empty_registry()
    version = store_version(reg, model, tmp_path / "versions", "abc", teacher_dir=teacher)
    stored = tmp_path / "versions" / version
    assert (stored / "model.onnx").read_text() == "selected/model.onnx"
    assert (stored / "teacher" / "model.safetensors").read_text() == "teacher/model.safetensors"
    assert not list((tmp_path / "versions").glob(".*"))  # no temp folder left behind


@pytest.fixture
def ws(tmp_path, registry):
    ws = Workspace(tmp_path / "ws")
    write_json(ws.registry, registry)
    return ws


def cli(ws, *args):
    return main(["--workspace", str(ws.root), *args])


def test_cli_promote_needs_force_and_a_reason(ws, capsys):
    assert cli(ws, "promote", "v3", "--reason", "why") == 2
    assert "add --force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli(ws, "promote", "v3", "--force")
    assert exit_.value.code == 2  # argparse: --reason is required
    assert cli(ws, "promote", "v9", "--force", "--reason", "why") == 2
    assert "no such version" in capsys.readouterr().err
    assert load_registry(ws.registry)["champion"] == "v2"


def test_cli_forced_promote_and_rollback_show_in_status(ws, capsys):
    assert cli(ws, "promote", "v3", "--force", "--reason", "needed for the demo") == 0
    assert "v2 -> v3 (forced: needed for the demo)" in capsys.readouterr().out
    assert cli(ws, "status", "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["champion"]["version"] == "v3" and view["champion"]["metrics"]["accuracy"] == 0.5
    assert [h["action"] for h in view["history"]] == ["promote", "promote", "force-promote"]
    assert cli(ws, "rollback", "--reason", "demo over") == 0
    assert "v3 -> v2 (rollback: demo over)" in capsys.readouterr().out
    assert cli(ws, "status") == 0
    text = capsys.readouterr().out
    assert "champion: v2" in text and "champion history:" in text
    assert "force-promote   v2 -> v3" in text and "rollback        v3 -> v2" in text
    assert "demo over" in text


def test_cli_rollback_takes_the_workspace_lock(ws, capsys):
    from evergreen.workspace import workspace_lock

    with workspace_lock(ws, "evergreen retrain"):
        assert cli(ws, "rollback") == 75
    assert "workspace busy: evergreen retrain" in capsys.readouterr().err
    assert load_registry(ws.registry)["champion"] == "v2"


def test_failed_switch_leaves_the_registry_as_it_was(ws, monkeypatch, capsys):
    before = ws.registry.read_text()
    fail_registry_writes(monkeypatch)
    assert cli(ws, "promote", "v3", "--force", "--reason", "x") == EvergreenError.exit_code
    assert "No space left on device" in capsys.readouterr().err
    assert ws.registry.read_text() == before
    assert not list(ws.models.glob(".registry.json.*"))
