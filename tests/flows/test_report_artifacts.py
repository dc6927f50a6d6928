"""What a run shows in the Prefect UI: a progress artifact that moves, validation, report links."""

from __future__ import annotations

import pytest

from flows.artifacts import TrainingProgress, publish_reports, publish_validation, validation_markdown

pytestmark = pytest.mark.usefixtures("prefect_harness")


def artifact(artifact_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    return found[0]


def latest(key: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_latest_artifacts()}[key]


def test_progress_artifact_moves_with_each_epoch():
    from prefect import flow

    @flow
    def watched() -> list:
        progress = TrainingProgress(4)
        seen = [(artifact(progress.id).data, artifact(progress.id).description)]
        for epoch in (1, 2):
            progress.update({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch,
                             "val_acc": 0.8 + epoch / 100}, 4)
            seen.append((artifact(progress.id).data, artifact(progress.id).description))
        progress.finish({"ran": True, "epochs_run": 2, "val_acc": 0.82})  # stopped early
        seen.append((artifact(progress.id).data, artifact(progress.id).description))
        return seen

    seen = watched()
    assert [s[0] for s in seen] == [0.0, 25.0, 50.0, 100.0]
    assert "epoch 2/4" in seen[2][1] and "val_acc 0.8200" in seen[2][1]
    assert "done, 2 epochs" in seen[3][1]
    assert latest("training-progress").data == 100.0  # a stable key: the Artifacts page's history


def test_train_calls_on_epoch_once_per_epoch(data):
    from evergreen.config import TrainConfig
    from tasks.train import train_model

    train, val, classes, norm = data
    rows = []
    cfg = TrainConfig(model="seed_cnn", epochs=2, batch_size=32, augment={"enabled": False})
    _, _, history = train_model(train, val, classes, norm, cfg, on_epoch=lambda r, n: rows.append((r, n)))
    assert [r for r, _ in rows] == history and {n for _, n in rows} == {2}


VALIDATION = {"success": False, "failures": ["label '7': 3 samples, expected at least 10"],
              "statistics": {"rows": 93, "classes": {"1": 90, "7": 3}, "shapes": {"1x8x8": 93},
                             "pixel_min": 0, "pixel_max": 255, "imbalance": 30.0},
              "suites": {"samples": {"success": True, "statistics": {"evaluated_expectations": 18,
                                                                     "successful_expectations": 18}},
                         "classes": {"success": False, "statistics": {"evaluated_expectations": 2,
                                                                      "successful_expectations": 1}}}}


def test_validation_markdown_names_the_verdict_suites_and_failures(tmp_path):
    text = validation_markdown(VALIDATION, tmp_path / "validation.html")
    assert text.startswith("# Data validation: **FAILED**")
    assert "| classes | 2 | 1 | **no** |" in text and "Samples per class: 1: 90, 7: 3" in text
    assert "label '7': 3 samples" in text and f"file://{tmp_path}/validation.html" in text


def test_reports_and_validation_are_published_with_stable_keys(tmp_path):
    from prefect import flow

    from evergreen.workspace import Workspace, write_json
    from tests.tasks.test_report_plots import METRICS, OUTCOME

    ws = Workspace(tmp_path)
    write_json(ws.reports / "metrics.json", METRICS)
    write_json(ws.reports / "validation.json", VALIDATION)
    (ws.reports / "validation.html").write_text("<html></html>")

    @flow
    def publish():
        publish_validation(ws)
        publish_reports(ws, OUTCOME, {"train": {"ran": True}})

    publish()
    assert (ws.reports / "run.html").exists()
    run_link, page_link = latest("run-report"), latest("data-validation-report")
    assert (ws.reports / "run.html").as_uri() in run_link.data and "rejected, v3" in run_link.data
    assert (ws.reports / "validation.html").as_uri() in page_link.data
    assert "**FAILED**" in latest("data-validation").data


def test_a_drifted_batch_and_its_screening_show_in_the_ui(workspace):
    from prefect import flow

    from flows.artifacts import publish_batch_drift, retraining_markdown

    line = "pixel shift: PSI of per-sample pixel_mean 8.28 > validate.max_pixel_psi 0.25"
    page = workspace.reports / "ingest" / "b1.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")

    @flow
    def landed() -> None:
        publish_batch_drift(workspace, {"batch_id": "b1", "source": "light.npz", "added": 300,
                                        "drift": [line]})

    landed()
    shown = latest("batch-drift").data
    assert "Batch b1 landed with drift warnings" in shown and line in shown and page.as_uri() in shown
    screened = {"batch_id": "b1", "reasons": [], "drift": [line],
                "noise": {"accuracy": 0.83, "scored": 300}}
    text = retraining_markdown({"status": "retrained", "champion": "v1", "message": "m",
                                "batches": {"screened": [screened]}})
    assert f"| b1 | {line} | 0.8300 | 300 | used |" in text
