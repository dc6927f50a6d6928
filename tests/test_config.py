"""Typed config: the committed params.yaml, dvc.yaml's params keys, overrides, errors."""

from pathlib import Path

import pytest
import yaml

from evergreen.config import Config, apply_overrides, default_params_yaml, load_config, parse_config
from evergreen.errors import ConfigError
from flows.dvcfile import dvc_yaml

ROOT = Path(__file__).resolve().parent.parent


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
