"""evergreen tune: the search space, a trial's params, params.yaml written back, the tune flow."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import yaml

from evergreen.config import Config, TrainConfig, load_config
from evergreen.errors import ConfigError
from tasks import tune
from tests.conftest import TINY_PARAMS, write_params

SMALL_SPACE = {"train.lr": {"low": 0.001, "high": 0.01, "log": True},
               "train.batch_size": {"choices": [32, 64]}}


def space_of(space: dict) -> Config:
    return Config.model_validate({"tune": {"space": space}})


def test_the_default_space_parses():
    cfg = Config()
    params = tune.parse_space(cfg.tune.space, cfg)
    assert [(p.path, p.kind) for p in params] == [
        ("train.lr", "float"), ("train.l2", "float"), ("train.dropout", "float"),
        ("train.batch_size", "choice")]
    assert tune.current_values(cfg, params) == ({"train.lr": 0.003, "train.l2": 0.0005,
                                            "train.dropout": 0.2, "train.batch_size": 64}, [])


@pytest.mark.parametrize("key, spec, expected", [
    ("train.lrr", {"low": 0.1, "high": 1.0}, "train.lrr is not a param"),
    ("compress.lr", {"low": 0.1, "high": 1.0}, "expected a train.* key"),
    ("lr", {"low": 0.1, "high": 1.0}, "expected a train.* key"),
    ("train.cnn", {"choices": [1]}, "is a section"),
    ("train.lr.x", {"low": 0.1, "high": 1.0}, "train.lr is a value, not a section"),
    ("train.distributed.nproc_per_node", {"choices": [1, 2]}, "train.distributed cannot be tuned"),
    ("train.augment.enabled", {"low": 0, "high": 1}, "not a numeric param"),
    ("train.dropout", {"low": 0.0, "high": 1.0}, "high 1.0 is not a valid train.dropout"),
    ("train.lr", {"low": 0.0, "high": 0.1, "log": True}, "expected low > 0"),
    ("train.lr", {"low": 0.1, "high": 1.0, "log": True, "step": 0.1}, "not both"),
    ("train", {"lr": {"low": 0.1}}, "set the whole space: --set 'tune.space="),
    ("train.lr", {"low": 0.1, "high": 0.01}, "must be below high"),
    ("train.batch_size", {"low": 16.5, "high": 64}, "expected an integer"),
    ("train.lr", {"min": 0.1, "max": 1.0}, "expected low and high"),
    ("train.lr", {"low": 0.1, "high": 1.0, "choices": [0.1]}, "expected low and high"),
    ("train.batch_size", {"choices": []}, "expected a non-empty list"),
    ("train.model", {"choices": ["cnn", "resnet"]}, "choice 'resnet' is not a valid train.model"),
])
def test_a_bad_space_is_one_line_naming_the_key(key, spec, expected):
    cfg = space_of({key: spec})
    with pytest.raises(ConfigError) as err:
        tune.parse_space(cfg.tune.space, cfg)
    message = str(err.value)
    assert message.startswith(f"params.yaml: tune.space.{key}: ") and "\n" not in message
    assert expected in message, message


def test_suggested_values_make_the_trials_train_config():
    import optuna

    space = {**SMALL_SPACE, "train.cnn.channels": {"choices": [[8, 16], [16, 32]]},
             "train.epochs": {"low": 2, "high": 5}}
    cfg = space_of(space)
    params = tune.parse_space(cfg.tune.space, cfg)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    values = tune.suggest(study.ask(), params)
    ddp = TrainConfig.model_validate({"distributed": {"nproc_per_node": 2}})
    train = tune.trial_config(cfg.model_copy(update={"train": ddp}), values, epochs=9)
    assert 0.001 <= train.lr <= 0.01 and train.batch_size in (32, 64)
    assert train.cnn.channels in ([8, 16], [16, 32]) and 2 <= train.epochs <= 5  # tuned beats 9
    assert train.distributed.world_size == 1  # trials report every epoch: in-process
    assert tune.trial_config(cfg, {}, epochs=9).epochs == 9


def test_values_outside_the_space_are_named():
    cfg = space_of({"train.lr": {"low": 0.01, "high": 0.1}, "train.epochs": {"low": 2, "high": 5}})
    inside, outside = tune.current_values(cfg, tune.parse_space(cfg.tune.space, cfg))
    assert inside == {} and outside == ["train.lr", "train.epochs"]  # 0.003 and 'auto'


def test_the_best_values_go_into_params_yaml_keeping_the_rest():
    text = ("# my notes\ntrain:\n  lr: 0.003  # tried 0.01: diverged\n  cnn:\n    channels: [16, 32]\n"
            "ingest:\n  labels_csv: null\n")
    out = tune.apply_to_yaml(text, {"train.lr": 0.0012345, "train.l2": 1.5e-05, "train.batch_size": 32,
                               "train.cnn.channels": [8, 16]})
    assert "# my notes" in out and "# tried 0.01: diverged" in out and "labels_csv: null" in out
    data = yaml.safe_load(out)
    assert data["train"]["lr"] == 0.0012345 and data["train"]["batch_size"] == 32
    assert data["train"]["cnn"]["channels"] == [8, 16]
    assert data["ingest"] == {"labels_csv": None}


def test_written_params_still_load(tmp_path):
    path = write_params(tmp_path, TINY_PARAMS)
    path.write_text(tune.apply_to_yaml(path.read_text(), {"train.lr": 1.5e-05, "train.dropout": 0.0}))
    cfg = load_config(path)
    assert cfg.train.lr == 1.5e-05 and cfg.train.dropout == 0.0


def test_a_pruned_trial_stops_fit_and_passes_through(data):
    import optuna

    class Pruning:  # an Optuna trial whose pruner stops it after its second epoch
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) >= 2

    trial, cfg = Pruning(), TrainConfig.model_validate({**TINY_PARAMS["train"], "epochs": 5})
    hook = tune.PruneHook(trial)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2/5"):
        tune.run_trial(*data, cfg, hook)
    assert [step for step, _ in trial.reported] == [1, 2] and hook.epochs_run == 2
    assert all(0.0 <= value <= 1.0 for _, value in trial.reported)


def test_the_best_trial_and_params_yaml_trial_are_found():
    cfg = space_of(SMALL_SPACE)
    params = tune.parse_space(cfg.tune.space, cfg)
    rows = [{"number": 0, "state": "complete", "value": 0.9, "train.lr": 0.003, "train.batch_size": 64},
            {"number": 1, "state": "complete", "value": 0.95, "train.lr": 0.005, "train.batch_size": 32},
            {"number": 2, "state": "pruned", "value": 0.99, "train.lr": 0.001, "train.batch_size": 32},
            {"number": 3, "state": "complete", "value": 0.95, "train.lr": 0.002, "train.batch_size": 64}]
    summary = tune.summarize(rows, params, tune.current_values(cfg, params)[0])
    assert summary["best"]["number"] == 1  # a pruned trial's partial value never wins; ties: first
    assert summary["params"] == {"train.lr": 0.005, "train.batch_size": 32}
    assert summary["defaults"]["number"] == 0
    assert summary["counts"] == {"complete": 3, "pruned": 1, "fail": 0, "total": 4}


def test_the_study_is_the_same_until_the_data_space_or_untuned_params_change():
    cfg = space_of(SMALL_SPACE)
    name = tune.study_name("abc123", {"classes": ["0", "1"]}, cfg)
    tuned = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.005})})
    assert tune.study_name("abc123", {"classes": ["0", "1"]}, tuned) == name  # the best ones applied
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"model": "seed_cnn"})})
    assert tune.study_name("abc123", {"classes": ["0", "1"]}, other) != name
    assert tune.study_name("def456", {"classes": ["0", "1"]}, cfg) != name
    wider = copy.deepcopy(SMALL_SPACE)
    wider["train.lr"]["high"] = 0.02
    assert tune.study_name("abc123", {"classes": ["0", "1"]}, space_of(wider)) != name


def test_cli_bad_space_key_exits_2_with_one_line(workspace, capsys):
    from app.cli import main

    write_params(workspace.root, {**TINY_PARAMS, "tune": {"space": {"train.nope": {"low": 1, "high": 2}}}})
    assert main(["--workspace", str(workspace.root), "tune"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evergreen tune: error: ") and "tune.space.train.nope" in err
    assert "\n" not in err and "Traceback" not in err
    assert not (workspace.root / "data").exists()  # refused before anything ran
    assert main(["--workspace", str(workspace.root), "tune", "--trials", "0"]) == 2
    assert "--trials 0: expected a positive number" in capsys.readouterr().err


# ---- the tune flow ----------------------------------------------------------------------

def tune_params(space: dict, **section) -> dict:
    return {**TINY_PARAMS, "tune": {"space": space, "pruner": "none", **section}}


@pytest.fixture(scope="module")
def tuned_twice(tmp_path_factory, prefect_harness):
    """One workspace: 3 trials, then a rerun adding 2 to the same study."""
    import torch

    from evergreen.workspace import Workspace
    from flows.tune import tune_flow

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as conftest's one_torch_thread, which a module fixture precedes
    root = tmp_path_factory.mktemp("tune") / "ws"
    root.mkdir()
    path = write_params(root, tune_params(SMALL_SPACE))
    path.write_text("# kept by tune\n" + path.read_text())
    first = tune_flow(str(root), trials=3)
    first_params = load_config(path).train
    second = tune_flow(str(root), trials=2)
    torch.set_num_threads(threads)
    return Workspace(root), first, first_params, second


@pytest.mark.slow
@pytest.mark.e2e
def test_tune_runs_the_trials_and_writes_its_reports(tuned_twice):
    ws, first, _, _ = tuned_twice
    assert first["counts"]["total"] == 3 and first["new_trials"] == 3
    assert first["trials"][0]["note"] == "params.yaml's values"
    assert first["defaults"]["number"] == 0  # params.yaml's own values ran as trial 0
    assert first["best"]["value"] >= first["defaults"]["value"]
    for path in ("reports/tune/best.json", "reports/tune/trials.csv", "reports/figures/tune.png"):
        assert (ws.root / path).stat().st_size > 0, path
    best = json.loads((ws.root / "reports/tune/best.json").read_text())
    assert best["params"].keys() == SMALL_SPACE.keys() and best["study"] == first["study"]
    with open(ws.root / "reports/tune/trials.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 5  # written again by the rerun


@pytest.mark.slow
@pytest.mark.e2e
def test_tune_trials_show_as_task_runs_and_artifacts(tuned_twice):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="tune-trial-")))
        keys = {a.key for a in client.read_artifacts() if a.key}
    assert {r.name for r in runs} >= {f"tune-trial-{n}" for n in range(5)}
    assert {"tune-trials", "tune-history", "tune-summary"} <= keys


@pytest.mark.slow
@pytest.mark.e2e
def test_the_best_params_are_written_to_params_yaml(tuned_twice):
    ws, first, first_params, second = tuned_twice
    assert first["applied"] in ("written to params.yaml",
                                "unchanged (params.yaml already holds the best values)")
    assert first_params.lr == first["params"]["train.lr"]
    assert first_params.batch_size == first["params"]["train.batch_size"]
    cfg = load_config(ws.params)  # still a valid config, with the rerun's best
    assert (cfg.train.lr, cfg.train.batch_size) == tuple(second["params"].values())
    assert ws.params.read_text().startswith("# kept by tune\n")
    assert cfg.train.cnn.channels == [16, 32]  # untuned keys as they were


@pytest.mark.slow
@pytest.mark.e2e
def test_a_rerun_resumes_the_study(tuned_twice, capsys):
    from flows.tune import print_tune_outcome

    _, first, _, second = tuned_twice
    assert second["study"] == first["study"]
    assert second["counts"]["total"] == 5 and second["new_trials"] == 2
    assert second["best"]["value"] >= first["best"]["value"]
    # params.yaml now holds the best values, which already ran: not queued again
    assert [r["note"] for r in second["trials"]].count("params.yaml's values") == 1
    print_tune_outcome(second)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["trial", "state", "value", "epochs", "train.lr",
                                           "train.batch_size"]
    assert f"best: trial {second['best']['number']}, val accuracy" in out
    assert "params.yaml's values: trial" in out


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_the_median_pruner_stops_bad_trials(tmp_path):
    from flows.tune import tune_flow

    root = tmp_path / "ws"
    root.mkdir()
    # learning rates down to 1e-7 learn nothing in 4 epochs: below the median, they are stopped
    write_params(root, tune_params({"train.lr": {"low": 1e-7, "high": 0.01, "log": True}},
                                   pruner="median"))
    result = tune_flow(str(root), trials=7, apply=False)
    states = [r["state"] for r in result["trials"]]
    assert states.count("pruned") >= 1, result["trials"]
    assert result["applied"] == "not written (--no-apply)"
    pruned = next(r for r in result["trials"] if r["state"] == "pruned")
    assert pruned["note"].startswith(f"pruned at epoch {pruned['epochs_run']}/4")
