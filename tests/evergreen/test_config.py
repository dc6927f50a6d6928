"""Typed config: the committed params.yaml, dvc.yaml's params keys, overrides, errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evergreen.config import Config, apply_overrides, default_params_yaml, load_config, parse_config
from evergreen.dvcfile import dvc_yaml
from evergreen.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_committed_params_load_and_match_defaults():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg == Config()
    assert (ROOT / "params.yaml").read_text() == default_params_yaml()


def test_committed_dvc_yaml_is_the_generated_one():
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml(ROOT)


def lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def test_every_dvc_params_key_exists_in_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    keys = [k for stage in stages.values() for k in stage.get("params", [])]
    assert keys, "dvc.yaml declares no params"
    for key in keys:
        lookup(params, key)  # KeyError names the missing key


def test_every_stage_has_a_section_and_a_config_class():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in ("ingest", "validate", "preprocess", "train", "compress", "evaluate", "promote"):
        assert stage in params
        assert type(Config().section(stage)).__name__ == f"{stage.capitalize()}Config"


@pytest.mark.parametrize("data, key", [
    ({"train": {"epochs": "three"}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"train": {"epoch": 3}}, "train.epoch: unknown key"),
    ({"trian": {}}, "trian: unknown key"),
    ({"train": {"model": "resnet"}}, "train.model"),
    ({"promote": {"min_accuracy": 1.5}}, "promote.min_accuracy"),
    ({"preprocess": {"val_fraction": 0.5, "test_fraction": 0.45}}, "val_fraction + test_fraction"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert key in str(err.value)


def test_overrides_apply_for_one_run(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 1e-4\n")
    cfg = load_config(path, ["train.epochs=3", "train.augment.enabled=false"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.augment.enabled) == (3, 1e-4, False)
    assert "epochs" not in path.read_text()


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "expected section.key=value"),
    ("model.epochs=3", "unknown section 'model'"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({}, [override])


def test_yaml_is_parsed_safely(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not (tmp_path / "pwned").exists()


def test_every_config_section_can_be_overridden(tmp_path):
    cfg = load_config(tmp_path / "none.yaml", ["watch.poll_seconds=2", "ui.port=4300",
                                               "serve.timezone=Europe/Paris",
                                               "validate.min_batch_size=3"])
    assert (cfg.watch.poll_seconds, cfg.ui.port, cfg.serve.timezone) == (2.0, 4300, "Europe/Paris")
    assert cfg.validate_.min_batch_size == 3
    with pytest.raises(ConfigError, match="unknown section 'validate_'"):
        apply_overrides({}, ["validate_.min_batch_size=3"])


RUNTIME_COMMANDS = {"ui": ["ui", "--stop"], "watch": ["watch", "DROPS", "--once"], "serve": ["serve"]}


@pytest.mark.parametrize("section", RUNTIME_COMMANDS)
def test_ui_watch_and_serve_refuse_an_unknown_key_naming_it(workspace, tmp_path, capsys, section):
    from app.cli import main

    (tmp_path / "drops").mkdir()
    args = [str(tmp_path / "drops") if a == "DROPS" else a for a in RUNTIME_COMMANDS[section]]
    assert main(["--workspace", str(workspace.root), *args, "--set", f"{section}.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{section}.nope: unknown key" in err


def test_ui_applies_its_set(workspace, monkeypatch):
    from app.cli import main

    seen = []
    monkeypatch.delenv("EVERGREEN_UI_PORT", raising=False)
    monkeypatch.setattr("app.ui.stop_ui", lambda server: seen.append(server.port) or 0)
    assert main(["--workspace", str(workspace.root), "ui", "--stop", "--set", "ui.port=4301"]) == 0
    assert seen == [4301]


def test_watch_applies_its_set(workspace, tmp_path, monkeypatch):
    from app import watch
    from app.cli import main

    seen = []

    class Tracker(watch.DropTracker):
        def __init__(self, folder, marker, quiet_seconds):
            seen.append((marker, quiet_seconds))
            super().__init__(folder, marker, quiet_seconds)

    monkeypatch.setattr("app.watch.DropTracker", Tracker)
    (tmp_path / "drops").mkdir()
    sets = ["watch.quiet_seconds=7", "watch.marker=_DONE", "watch.poll_seconds=0.1", "watch.retrain=local"]
    argv = ["--workspace", str(workspace.root), "watch", str(tmp_path / "drops"), "--once"]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    assert seen == [("_DONE", 7.0)]


def test_serve_applies_its_set_and_its_runs_get_it(workspace, monkeypatch):
    import prefect

    from app.cli import main
    from app.serve import SERVED_ENV

    served = []
    monkeypatch.setenv(SERVED_ENV, "")  # serve sets it; monkeypatch puts it back
    monkeypatch.setattr("app.serve.check_server", lambda: "http://127.0.0.1:1/api")
    monkeypatch.setattr(prefect, "serve", lambda *deployments, limit: served.extend(deployments))
    sets = ["serve.timezone=Europe/Paris", "serve.retrain_cron='30 * * * *'"]
    assert main(["--workspace", str(workspace.root), "serve",
                 *(a for s in sets for a in ("--set", s))]) == 0
    training, retraining = served
    assert [s.schedule.timezone for s in training.schedules] == ["Europe/Paris"]
    assert [s.schedule.cron for s in retraining.schedules] == ["30 * * * *"]
    params = {"workspace": str(workspace.root), "overrides": sets}
    assert training.parameters == retraining.parameters == retraining.triggers[0].parameters == params


def test_a_date_in_params_yaml_survives_an_override(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  seed: 2024-01-01\n")
    with pytest.raises(ConfigError, match="train.seed: Input should be a valid integer"):
        load_config(path, ["train.epochs=3"])


BAD_OVERRIDES = [
    ("train.lr=@x:1", "train.lr: expected a YAML value, got '@x:1'"),
    ("train.lr=[1", "train.lr: expected a YAML value, got '[1'"),
    ("train.lr={a: 1, a: 2}", "found duplicate key 'a'"),
    ("key=@x:1", "unknown section 'key'"),
    ("a.b=[1", "unknown section 'a'"),
    ("train..lr=1", "expected section.key=value"),
    ("watch.debounce_s=1", "watch.debounce_s: unknown key"),
    ("train.augment=5", "train.augment: expected a section"),
    ("train.lr.x=1", "train.lr: Input should be a valid number"),
]
BAD_PARAMS = [
    ("train: 5\n", "train: expected a section (a mapping of keys), got 5"),
    ("train: [1, 2]\n", "train: expected a section"),
    ("- train\n", "expected a mapping of sections, got list"),
    ("train:\n  augment: [1]\n", "train.augment: expected a section"),
    ("train:\n  1: 2\n", "train.1: Keys should be strings"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", "line 3, column 3: found duplicate key 'lr'"),
    ("train:\n  lr: @x\n", "not valid YAML: line 2, column 7: found character '@'"),
    ("? [1]\n: 2\n", "found unhashable key"),
]


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(root), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("override, message", BAD_OVERRIDES)
def test_a_malformed_override_is_one_line_and_exit_2(tmp_path, override, message):
    done = run_cli(tmp_path, "run", "--set", override)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("text, message", BAD_PARAMS)
def test_a_malformed_params_yaml_is_one_line_and_exit_2(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    for args in (["run"], ["run", "--set", "train.epochs=3"], ["stage", "validate"]):
        done = run_cli(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("evergreen ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr
    assert message in run_cli(tmp_path, "run").stderr


def test_a_params_yaml_that_is_not_utf8_is_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"train:\n  lr: \xff\n")
    done = run_cli(tmp_path, "run")
    assert done.returncode == 2 and "not UTF-8 text" in done.stderr
