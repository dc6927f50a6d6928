"""The training-pipeline flow under one Prefect test harness: run, rerun, bad data."""

import pytest

from evergreen import dvcfile
from evergreen.errors import DataValidationError
from flows.training import PIPELINE, training_pipeline
from mains.versions import load_registry
from tests.conftest import copy_workspace, write_png_folder

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]


def flow_artifact_keys(flow_run_id=None) -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_artifacts() if a.key}


@pytest.fixture(scope="module")
def ran_twice(tmp_path_factory):
    """One workspace, the flow run twice with nothing changed in between."""
    from evergreen.workspace import Workspace
    from tests.conftest import TINY_PARAMS, write_params

    root = tmp_path_factory.mktemp("flow") / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    first = training_pipeline(str(root))
    second = training_pipeline(str(root))
    return Workspace(root), first, second


def test_first_run_trains_every_stage_and_promotes(ran_twice):
    ws, first, _ = ran_twice
    assert first["ingest"]["added"] == 1797
    assert all(first["stages"][name]["ran"] for name, _ in PIPELINE)
    assert first["promote"]["verdict"] == "promoted", first["promote"]["reasons"]
    for path in ("models/teacher/model.safetensors", "models/student/model.safetensors",
                 "reports/metrics.json", "reports/validation.json", "data/batches.dvc",
                 "models/versions.dvc", "dvc.lock"):
        assert (ws.root / path).exists(), path


def test_after_a_run_dvc_sees_everything_current(ran_twice):
    ws, _, _ = ran_twice
    for name, _ in PIPELINE:
        assert dvcfile.stage_is_current(ws.root, name), name


def test_second_run_trains_nothing_and_keeps_the_champion(ran_twice):
    ws, first, second = ran_twice
    assert second["ingest"]["batch_id"] is None
    assert not any(s["ran"] for s in second["stages"].values())
    assert second["promote"]["verdict"] == "unchanged"
    registry = load_registry(ws.registry)
    assert registry["champion"] == first["promote"]["version"]
    assert [c["verdict"] for c in registry["candidates"]] == ["promoted", "unchanged"]


def test_run_publishes_summary_and_metrics_artifacts(ran_twice):
    assert {"training-run-summary", "training-metrics"} <= flow_artifact_keys()


def test_override_changes_one_run_only(ran_twice, tmp_path):
    ws = copy_workspace(ran_twice[0], tmp_path)
    params_before = ws.params.read_text()
    result = training_pipeline(str(ws.root), overrides=["compress.epochs=1"])
    assert not result["stages"]["train"]["ran"] and result["stages"]["compress"]["ran"]
    assert ws.params.read_text() == params_before
    assert not dvcfile.stage_is_current(ws.root, "compress")  # outputs differ from params.yaml's


@pytest.mark.parametrize("overrides, message", [
    ([], "unknown labels ['x']"),  # refused by the batch checks at ingest
    (["validate.new_classes=allow", "validate.min_label_shift_pvalue=0"],
     "min samples per class"),  # landed, then refused by the dataset suite
])
def test_bad_batch_is_quarantined_and_dataset_kept(ran_twice, tmp_path, digits, overrides, message):
    ws = copy_workspace(ran_twice[0], tmp_path)
    batches_before = sorted(p.name for p in ws.batches.iterdir())
    registry_before = ws.registry.read_text()
    # 3 new images of an unknown class "x": a new label, and too few samples for a class
    folder = write_png_folder(tmp_path / "new", 255 - digits.x[:3], ["x"] * 3)
    with pytest.raises(DataValidationError) as err:
        training_pipeline(str(ws.root), data=str(folder), overrides=overrides)
    assert message in str(err.value) and "quarantined" in str(err.value)
    assert sorted(p.name for p in ws.batches.iterdir()) == batches_before
    assert ws.registry.read_text() == registry_before
    quarantined = list(ws.quarantine.iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / "reasons.txt").exists()
    assert dvcfile.stage_is_current(ws.root, "preprocess")


def test_crashed_training_is_retried_but_user_errors_are_not():
    from types import SimpleNamespace

    from evergreen.errors import BadInputError, TrainingCrashedError
    from flows.training import transient

    def state(exc):
        def result():
            raise exc
        return SimpleNamespace(result=result)

    assert transient(None, None, state(TrainingCrashedError("rank 1 killed")))
    assert transient(None, None, state(OSError("connection reset")))
    assert not transient(None, None, state(BadInputError("bad.png: not an image")))
