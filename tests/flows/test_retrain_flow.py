"""The continual-retraining flow: nothing new, bad batches quarantined (fast, with a
hand-made champion); then as a user: train on part of digits, ingest more, retrain (slow)."""


import numpy as np
import pytest

from app.cli import main
from evergreen import dvcfile
from evergreen.config import Config
from evergreen.errors import DataValidationError
from evergreen.workspace import Workspace, read_json
from mains.versions import load_registry
from tests.conftest import TINY_PARAMS, copy_workspace, write_params

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]


def land(ws, digits, idx, labels=None):
    from tasks.ingest import Batch, dedupe, write_batch

    labels = digits.labels[idx] if labels is None else labels
    batch, hashes, _, _ = dedupe(Batch(digits.x[idx], labels, [digits.sources[i] for i in idx]), set())
    batch_id = write_batch(batch, hashes, ws.batches)
    dvcfile.track(ws.root, "data/batches")
    return batch_id


def register_teacher_as_champion(ws, cfg):
    """The trained teacher becomes v1, with its test accuracy and data lineage."""
    from mains.processed import load_split
    from mains.promote import data_lineage
    from mains.versions import save_registry, store_version
    from nets.io import file_sha256, load_model
    from tasks.evaluate import predict_proba
    from tasks.promote import empty_registry, now, record

    model, card = load_model(ws.model_dir("teacher"))
    x, y = load_split(ws, "test")
    accuracy = float((predict_proba(model, card, x).argmax(1) == y).mean())
    registry = empty_registry()
    version = store_version(registry, ws.model_dir("teacher"), ws.versions,
                            file_sha256(ws.model_dir("teacher") / "model.safetensors"))
    entry = {"version": version, "verdict": "promoted", "reasons": [], "gates": [], "time": now(),
             "run_id": "fixture", "role": "teacher", "arch": card["arch"], "params_hash": "p",
             "metrics": {"accuracy": accuracy, "f1_macro": accuracy}, "champion_before": None,
             "data_version": dvcfile.data_version(ws.root), "lineage": data_lineage(ws, cfg.preprocess)}
    save_registry(ws.registry, record(registry, entry, True, "fixture champion"))


@pytest.fixture(scope="module")
def champion_ws(tmp_path_factory, digits):
    """A workspace whose champion (a tiny teacher) was trained on the first 1000 digits."""
    from mains import call_main

    root = tmp_path_factory.mktemp("retrain") / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    ws = Workspace(root)
    dvcfile.init_workspace(ws)
    land(ws, digits, np.arange(1000))
    cfg = Config.model_validate(TINY_PARAMS)
    for stage in ("validate", "preprocess", "train"):
        call_main(stage, ws, cfg)
    register_teacher_as_champion(ws, cfg)
    return ws


@pytest.fixture
def ws(champion_ws, tmp_path):
    return copy_workspace(champion_ws, tmp_path)


def test_nothing_new_trains_nothing(ws, capsys):
    from flows.retraining import continual_retraining

    teacher = (ws.model_dir("teacher") / "model.safetensors").stat().st_mtime_ns
    registry = ws.registry.read_text()
    result = continual_retraining(str(ws.root))
    assert result["status"] == "nothing-new" and "nothing trained" in result["message"]
    assert main(["--workspace", str(ws.root), "retrain"]) == 0
    assert "nothing new: no batch landed since champion v1" in capsys.readouterr().out
    assert (ws.model_dir("teacher") / "model.safetensors").stat().st_mtime_ns == teacher
    assert ws.registry.read_text() == registry


def test_without_a_champion_retrain_says_what_to_do(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    assert main(["--workspace", str(root), "retrain"]) == 1
    assert "no champion yet; run `evergreen run` first" in capsys.readouterr().err


def test_label_noise_and_label_shift_are_quarantined_champion_unchanged(ws, digits, capsys):
    from flows.retraining import continual_retraining

    rng = np.random.default_rng(0)
    idx = np.arange(1000, 1300)
    noisy = land(ws, digits, idx, labels=rng.permutation(digits.labels[idx]))  # histogram intact
    threes = np.flatnonzero(digits.labels == "3")
    shifted = land(ws, digits, threes[threes >= 1300][:40])  # only one class: label shift
    registry = ws.registry.read_text()
    # a label shift refuses a batch only by choice (by default it warns; see the drift tests below)
    assert main(["--workspace", str(ws.root), "retrain", "--set", "validate.on_drift=refuse"]) == 2
    err = capsys.readouterr().err
    assert "nothing usable: all 2 new batches were quarantined; champion v1 unchanged" in err
    noise_reason = (ws.quarantine / noisy / "reasons.txt").read_text()
    assert "suspected label noise" in noise_reason and "below its test accuracy" in noise_reason
    assert "label" in (ws.quarantine / shifted / "reasons.txt").read_text()
    assert "label noise" not in (ws.quarantine / shifted / "reasons.txt").read_text()
    assert not list(ws.batches.glob(f"{noisy}.*")) and not list(ws.batches.glob(f"{shifted}.*"))
    assert ws.registry.read_text() == registry
    assert read_json(ws.reports / "retrain" / f"{noisy}.json")["success"]  # drift checks missed it
    land(ws, digits, idx, labels=rng.permutation(digits.labels[idx]))  # landed again
    with pytest.raises(DataValidationError, match="nothing usable"):
        continual_retraining(str(ws.root))


# --- drift: a shifted population with correct labels is learnt from, with wrong ones refused ---

DRIFT_PARAMS = {**TINY_PARAMS, "retrain": {"epochs": 4},
                "compress": {**TINY_PARAMS["compress"], "control": False, "prune": {"ratios": []},
                             "quantize": {"variants": []}}}


def other_light(x: np.ndarray) -> np.ndarray:
    """Digits under other light: contrast down to 60% (per-sample pixel_mean PSI about 8)."""
    return np.round(x * 0.6).astype(np.uint8)


@pytest.fixture
def drift_ws(ws, tmp_path, digits):
    """The champion's workspace with quick retrain params, and a shifted, correctly labelled
    batch of 300 unseen digits as an NPZ file (with other labels when given)."""
    write_params(ws.root, DRIFT_PARAMS)

    def source(name: str, labels=None):
        idx = np.arange(1000, 1300)
        y = digits.labels[idx] if labels is None else labels
        np.savez(tmp_path / name, x=other_light(digits.x[idx])[:, 0], y=y.astype(int))
        return str(tmp_path / name)

    return ws, source


def ingest(ws, *args) -> int:
    return main(["--workspace", str(ws.root), "ingest", *args])


def test_shifted_batch_lands_with_a_drift_warning_and_the_retrain_learns_from_it(drift_ws, digits,
                                                                                  capsys):
    from nets.io import load_model
    from tasks.retrain import predicted_names

    ws, source = drift_ws
    assert ingest(ws, source("light.npz")) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "drift warning" in x)
    assert "PSI of per-sample pixel_mean" in line and "> validate.max_pixel_psi 0.25" in line
    batch_id = out.split("landed batch ")[1].split(":")[0]
    report = read_json(ws.reports / "ingest" / f"{batch_id}.json")
    assert report["success"] and report["warnings"] and not report["failures"]
    psi = next(r for r in report["drift"] if r["statistic"] == "pixel_psi")
    assert psi["result"] == "warn" and psi["value"] > 0.25
    assert "drift warning(s)" in (ws.reports / "ingest" / f"{batch_id}.html").read_text()

    assert main(["--workspace", str(ws.root), "retrain"]) == 0
    registry = load_registry(ws.registry)
    entry = registry["candidates"][-1]
    assert entry["trigger"] == "continual-retraining" and entry["verdict"] in ("promoted", "rejected")
    assert entry["retrain"]["new_batches"] == [batch_id] and entry["retrain"]["training"] == "warm"
    assert "pixel shift" in entry["retrain"]["drifted"][batch_id][0]  # against the champion's data
    assert "pixel shift" in entry["lineage"]["drift"][batch_id][0]  # as ingest saw it
    # the fine-tuned teacher knows the new light better than the champion did
    unseen = np.arange(1300, 1797)
    x, labels = other_light(digits.x[unseen]), digits.labels[unseen]
    champion = load_model(ws.root / registry["versions"]["v1"]["path"])
    teacher = load_model(ws.model_dir("teacher"))
    before = (predicted_names(*champion, x) == labels).mean()
    after = (predicted_names(*teacher, x) == labels).mean()
    assert after > before + 0.02, (before, after)


def test_shifted_batch_with_shuffled_labels_is_quarantined_by_the_noise_screen(drift_ws, digits,
                                                                                capsys):
    ws, source = drift_ws
    labels = np.random.default_rng(0).permutation(digits.labels[1000:1300])  # histogram intact
    assert ingest(ws, source("light.npz", labels)) == 0  # the drift alone does not refuse it
    assert "drift warning" in capsys.readouterr().out
    registry = ws.registry.read_text()
    assert main(["--workspace", str(ws.root), "retrain"]) == 2
    assert "nothing usable" in capsys.readouterr().err
    (held,) = ws.quarantine.iterdir()
    reasons = (held / "reasons.txt").read_text()
    assert "suspected label noise" in reasons and "pixel shift" not in reasons
    assert ws.registry.read_text() == registry and load_registry(ws.registry)["champion"] == "v1"


def test_shifted_batch_is_refused_at_ingest_with_on_drift_refuse(drift_ws, capsys):
    ws, source = drift_ws
    params = ws.params.read_text().replace("on_drift: warn", "on_drift: refuse")
    ws.params.write_text(params)
    version, batches = dvcfile.data_version(ws.root), sorted(ws.batches.iterdir())
    assert ingest(ws, source("light.npz")) == 2
    err = capsys.readouterr().err
    assert "pixel shift: PSI of per-sample pixel_mean" in err and "quarantined" in err
    assert dvcfile.data_version(ws.root) == version and sorted(ws.batches.iterdir()) == batches
    (held,) = ws.quarantine.iterdir()
    assert "pixel shift" in (held / "reasons.txt").read_text()


# --- as a user: part of digits, then the rest (slow: three pipeline runs) ----------------

FAST_COMPRESS = {**TINY_PARAMS["compress"], "control": False, "prune": {"ratios": []},
                 "quantize": {"variants": []}}
USER_PARAMS = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 12},
               "compress": FAST_COMPRESS, "retrain": {"epochs": 4}}


def write_npz(path, digits, idx, labels=None):
    np.savez(path, x=digits.x[idx], y=(digits.labels[idx] if labels is None else labels).astype(int))
    return str(path)


@pytest.fixture(scope="module")
def user(tmp_path_factory, digits):
    """run on the first 900 digits, ingest the next 600, retrain, retrain again."""
    from flows.retraining import continual_retraining
    from flows.training import training_pipeline

    tmp = tmp_path_factory.mktemp("user")
    root = tmp / "ws"
    root.mkdir()
    write_params(root, USER_PARAMS)
    ws = Workspace(root)
    first = training_pipeline(str(root), data=write_npz(tmp / "part1.npz", digits, np.arange(900)))
    assert main(["--workspace", str(root), "ingest",
                 write_npz(tmp / "part2.npz", digits, np.arange(900, 1500))]) == 0
    retrained = continual_retraining(str(root))
    again = continual_retraining(str(root))
    return ws, first, retrained, again, tmp


@pytest.mark.slow
def test_retrain_on_a_new_batch_gates_a_warm_started_challenger(user):
    ws, first, retrained, _, _ = user
    assert first["promote"]["verdict"] == "promoted", first["promote"]["reasons"]
    outcome = retrained["promote"]
    assert retrained["training"]["mode"] == "warm" and retrained["stages"]["train"]["replay_samples"] > 0
    registry = load_registry(ws.registry)
    entry = registry["candidates"][-1]
    assert entry["trigger"] == "continual-retraining" and entry["retrain"]["champion"] == "v1"
    assert entry["data_version"] != first["promote"]["data_version"]
    assert len(entry["lineage"]["batches"]) == 2
    comparison = entry["comparison"]
    assert comparison["old_test"]["samples"] < comparison["current_test"]["samples"]
    names = {g["name"] for g in entry["gates"]}
    assert {"not_worse_than_champion", "max_class_recall_drop", "max_forgetting"} <= names
    if outcome["verdict"] == "promoted":
        assert registry["champion"] == outcome["version"]
        assert registry["history"][-1]["previous"] == "v1"
    else:  # a recorded rejection, each failed gate with value and threshold
        assert registry["champion"] == "v1" and outcome["reasons"]
    assert all(dvcfile.stage_is_current(ws.root, s) for s in ("validate", "preprocess", "train"))


@pytest.mark.slow
def test_retrain_again_says_nothing_new(user):
    _, _, _, again, _ = user
    assert again["status"] == "nothing-new" and "nothing trained" in again["message"]


@pytest.mark.slow
def test_a_worse_challenger_is_rejected_naming_the_failed_gates(user, digits, monkeypatch):
    """A test hook shuffles the labels the warm start trains on."""
    from flows.retraining import continual_retraining

    ws, _, _, _, tmp = user
    champion = load_registry(ws.registry)["champion"]
    real = __import__("tasks.retrain", fromlist=["replay_mix"]).replay_mix

    def shuffled(train, is_new, ratio, seed):
        (x, y), info = real(train, is_new, ratio, seed)
        return (x, np.random.default_rng(1).permutation(y)), info

    monkeypatch.setattr("tasks.retrain.replay_mix", shuffled)
    assert main(["--workspace", str(ws.root), "ingest",
                 write_npz(tmp / "part3.npz", digits, np.arange(1500, 1797))]) == 0
    result = continual_retraining(str(ws.root), overrides=["retrain.lr=0.01"])
    outcome = result["promote"]
    assert outcome["verdict"] == "rejected"
    failed = {r.split(":")[0] for r in outcome["reasons"]}
    assert {"not_worse_than_champion", "max_forgetting"} <= failed
    assert load_registry(ws.registry)["champion"] == champion
