"""The gan-pipeline flow through the CLI: an RGB image folder, reruns, the feature extractor."""

import json

import numpy as np
import pytest

from app.cli import main
from evergreen.workspace import Workspace, read_json, write_json
from tests.conftest import TINY_PARAMS, write_params, write_png_folder

TINY_GAN = {"steps": 8, "batch_size": 16, "latent_dim": 16, "width": 8, "samples": 60}


def rgb_shapes(per_class: int = 24, side: int = 32, seed: int = 0):
    """Three classes of 32x32 RGB images: a red, green or blue square on a noisy background."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (3 * per_class, 3, side, side), dtype=np.uint8)
    labels = np.repeat(np.array(["red", "green", "blue"]), per_class)
    for i, label in enumerate(labels):
        top, left = rng.integers(0, side - 12, 2)
        x[i, ["red", "green", "blue"].index(label), top:top + 12, left:left + 12] = 230
    return x, labels


@pytest.mark.usefixtures("prefect_harness")
def test_gan_run_on_an_rgb_image_folder_then_again(tmp_path, capsys):
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, {**TINY_PARAMS, "gan": TINY_GAN})
    folder = write_png_folder(tmp_path / "faces", *rgb_shapes())
    loose = ["--set", "gan.max_distance_ratio=100", "--set", "gan.min_coverage_ratio=0"]
    args = ["--workspace", str(root), "gan", "run", *loose]

    assert main([*args, "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "generator g1: promoted" in out and "domain FID" in out
    ws = Workspace(root)
    report = read_json(ws.reports / "gan.json")
    assert report["metric"] == "classifier-feature Fréchet distance (domain FID)"
    assert set(report["coverage"]) == {"blue", "green", "red"}
    assert 0 <= report["floor"] and report["distance"] > 0 and report["ceiling"] > 0
    # no champion classifier yet: the train stage's teacher gives the features, and says so
    assert report["feature_extractor"]["source"] == "teacher"
    assert "run `evergreen run`" in report["feature_extractor"]["reason"]
    assert (ws.reports / "figures" / "gan_samples.png").stat().st_size > 0
    registry = read_json(ws.models / "gan_registry.json")
    assert registry["champion"] == "g1"
    assert (ws.models / "gan_versions" / "g1" / "model.safetensors").exists()
    assert read_json(ws.models / "gan_versions" / "g1" / "model.json")["in_shape"] == [3, 32, 32]
    assert not ws.registry.exists()  # the classifier registry is only read

    assert main(args) == 0  # nothing changed: no training, the same generator
    assert "generator g1: unchanged" in capsys.readouterr().out
    registry = read_json(ws.models / "gan_registry.json")
    assert [c["verdict"] for c in registry["candidates"]] == ["promoted", "unchanged"]


def test_bad_gan_override_exits_2_naming_the_key(workspace, capsys):
    code = main(["--workspace", str(workspace.root), "gan", "run", "--set", "gan.steps=0"])
    assert code == 2
    assert "gan.steps" in capsys.readouterr().err


def fake_champion(ws: Workspace, card: dict, files: dict[str, bytes]) -> None:
    """A classifier registry whose champion v1 holds `files` and `card`."""
    folder = ws.versions / "v1"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    write_json(folder / "model.json", card)
    write_json(ws.registry, {"champion": "v1", "candidates": [], "history": [],
                             "versions": {"v1": {"sha256": "x", "path": "models/versions/v1"}}})
    write_json(ws.processed / "meta.json", {"classes": ["0", "1"], "in_shape": [1, 8, 8]})


CARD = {"arch": "seed_cnn", "in_shape": [1, 8, 8], "classes": ["0", "1"], "mean": [0.5],
        "std": [0.25]}


def test_an_onnx_only_champion_hands_the_features_to_its_teacher(workspace):
    from flows.gan import champion_extractor

    fake_champion(workspace, {**CARD, "format": "onnx"}, {"model.onnx": b"graph"})
    write_json(workspace.model_dir("teacher") / "model.json", {**CARD, "arch": "cnn"})
    folder, info = champion_extractor(workspace)
    assert folder == workspace.model_dir("teacher")
    assert info["source"] == "teacher" and "ONNX-only" in info["reason"]


def test_a_torch_champion_gives_the_features(workspace):
    from flows.gan import champion_extractor

    fake_champion(workspace, CARD, {"model.safetensors": b"w"})
    folder, info = champion_extractor(workspace)
    assert folder == workspace.versions / "v1"
    assert info == {"source": "champion", "version": "v1", "arch": "seed_cnn"}


def test_a_champion_for_other_data_is_named(workspace):
    from evergreen.errors import EvergreenError
    from flows.gan import champion_extractor

    fake_champion(workspace, {**CARD, "classes": ["a", "b"]}, {"model.safetensors": b"w"})
    with pytest.raises(EvergreenError, match="v1.*other classes.*evergreen run"):
        champion_extractor(workspace)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_gan_pipeline_on_digits_uses_the_champion_classifier(tmp_path):
    from flows.gan import gan_pipeline
    from flows.training import training_pipeline

    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, {**TINY_PARAMS, "gan": {**TINY_GAN, "steps": 30, "samples": 200}})
    first = training_pipeline(str(root))
    assert first["promote"]["verdict"] == "promoted"
    result = gan_pipeline(str(root))
    assert not any(s["ran"] for s in result["stages"].values())  # validate, preprocess reused
    assert "train" not in result["stages"]  # the champion is there: no teacher training
    report = result["report"]
    assert report["feature_extractor"] == {"source": "champion", "version": "v1",
                                           "arch": first["promote"]["arch"]}
    assert len(report["coverage"]) == 10 and "conditional_accuracy" in report
    assert report["floor"] < report["ceiling"]
    assert json.loads((root / "reports" / "gan.json").read_text()) == report
