"""`evergreen evaluate --data SRC`: the champion's metrics on a labelled source, as served
(ONNX), read as ingest reads it; nothing in the workspace changes."""

import hashlib
import json

import numpy as np
import pytest

from app.cli import main
from tests.conftest import copy_workspace, write_png_folder

UNSEEN = np.arange(1000, 1300)  # digits the champion never saw


@pytest.fixture
def ws(champion_ws, tmp_path):
    return copy_workspace(champion_ws, tmp_path)


def evaluate(ws, *args) -> int:
    return main(["--workspace", str(ws.root), "evaluate", *map(str, args)])


def tree_digest(root) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected_metrics(ws, x, labels) -> dict:
    """classification_metrics of the served champion on the same arrays."""
    from mains.versions import load_registry
    from nets.io import load_model
    from nets.runtime import OnnxModel
    from tasks.evaluate import classification_metrics, predict_proba

    registry = load_registry(ws.registry)
    model, card = load_model(ws.root / registry["versions"]["v1"]["path"], prefer_onnx=True)
    assert isinstance(model, OnnxModel)
    y = np.array([card["classes"].index(label) for label in labels])
    return classification_metrics(y, predict_proba(model, card, x), card["classes"])


def test_metrics_on_a_folder_match_classification_metrics_and_nothing_changes(ws, tmp_path, digits,
                                                                               capsys):
    folder = write_png_folder(tmp_path / "test", digits.x[UNSEEN], digits.labels[UNSEEN])
    before = tree_digest(ws.root)
    assert evaluate(ws, "--data", folder, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert tree_digest(ws.root) == before  # dataset, registry, reports, quarantine: all as they were
    assert not ws.quarantine.exists() or not any(ws.quarantine.iterdir())
    expected = expected_metrics(ws, digits.x[UNSEEN], digits.labels[UNSEEN])
    assert result["samples"] == len(UNSEEN) and result["champion"] == "v1"
    assert result["runtime"] == "onnxruntime" and result["unreadable"] == []
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc_ovr"):
        assert result[key] == pytest.approx(expected[key]), key
    assert result["per_class_recall"] == pytest.approx(expected["per_class_recall"])
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    counts = {c: int((digits.labels[UNSEEN] == c).sum()) for c in result["classes"]}
    assert result["support"] == counts and sum(map(sum, result["confusion_matrix"])) == len(UNSEEN)


def test_human_output_is_a_short_table_with_the_worst_classes(ws, tmp_path, digits, capsys):
    folder = write_png_folder(tmp_path / "test", digits.x[UNSEEN], digits.labels[UNSEEN])
    assert evaluate(ws, "--data", folder) == 0
    out = capsys.readouterr().out
    expected = expected_metrics(ws, digits.x[UNSEEN], digits.labels[UNSEEN])
    assert f"accuracy   {expected['accuracy']:.4f}" in out
    assert f"macro-F1   {expected['f1_macro']:.4f}" in out
    assert f"samples    {len(UNSEEN)}" in out and "worst classes by recall" in out
    worst = min(expected["per_class_recall"].items(), key=lambda item: (item[1], item[0]))
    assert f"{worst[0]:<12} {worst[1]:>7.4f}" in out
    assert len(out.splitlines()) <= 12


def test_folder_and_labels_csv_in_another_shape_are_conformed_to_the_champion(ws, tmp_path, digits,
                                                                               capsys):
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    rows = ["Filename;ClassId"]
    for i in UNSEEN[:60]:
        rgb = np.repeat(digits.x[i, 0][:, :, None], 3, axis=2)  # colour and 16x16: not the champion's
        Image.fromarray(rgb).resize((16, 16), Image.NEAREST).save(folder / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;{digits.labels[i]}")
    (tmp_path / "GT.csv").write_text("\n".join(rows) + "\n")
    assert evaluate(ws, "--data", folder, tmp_path / "GT.csv", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 60 and result["in_shape"] == [1, 8, 8]
    assert result["accuracy"] > 0.5


def test_unknown_labels_are_named_exit_2(ws, tmp_path, digits, capsys):
    labels = digits.labels[UNSEEN[:40]].copy()
    labels[:3] = "cat"
    folder = write_png_folder(tmp_path / "test", digits.x[UNSEEN[:40]], labels)
    before = tree_digest(ws.root)
    assert evaluate(ws, "--data", folder) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err and captured.out == ""
    assert "label: 3 samples have labels champion v1 does not know: 'cat' (3)" in err
    assert str(folder.name) in err and "expected one of its 10 classes" in err
    assert tree_digest(ws.root) == before


def test_without_a_champion_exit_2(workspace, tmp_path, digits, capsys):
    folder = write_png_folder(tmp_path / "test", digits.x[:20], digits.labels[:20])
    assert evaluate(workspace, "--data", folder) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no champion yet; run `evergreen run` first" in err


def test_an_unreadable_file_is_named_and_the_rest_scored(ws, tmp_path, digits, capsys):
    folder = write_png_folder(tmp_path / "test", digits.x[UNSEEN[:50]], digits.labels[UNSEEN[:50]])
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert evaluate(ws, "--data", folder, "--json") == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["samples"] == 50
    assert "broken.png" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("args, message", [
    (["a", "b", "c"], "evaluate --data: one source"),
    (["nowhere"], "nowhere"),
])
def test_bad_sources_exit_2_in_one_line(ws, tmp_path, args, message, capsys):
    assert evaluate(ws, "--data", *(tmp_path / a for a in args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
