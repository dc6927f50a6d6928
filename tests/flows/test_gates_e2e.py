"""The first-run gate on a hard RGB set (60-70%): beating the null model significantly
promotes; an absolute threshold the user sets blocks, and the last line names it."""

import numpy as np
import pytest

from app.cli import main
from evergreen.workspace import Workspace, read_json
from mains.versions import load_registry
from tests.conftest import TINY_PARAMS, write_params, write_png_folder

SHAPES = ("disc", "square", "triangle", "ring")


def hard_rgb(per_class: int = 300, side: int = 16, label_noise: float = 0.27, seed: int = 0):
    """Four shapes in random colours, sizes and places on textured backgrounds; a share of
    the labels is wrong (as in crowd-labelled data), so no model gets far past 1 - noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    x, y = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            img = rng.integers(0, 256, 3)[:, None, None] * rng.uniform(0.3, 0.7) \
                + rng.normal(0, 25, (3, side, side))
            r = rng.uniform(side * 0.22, side * 0.36)
            cy, cx = rng.uniform(r, side - r, 2)
            dy, dx = np.abs(yy - cy), np.abs(xx - cx)
            mask = {"disc": dy ** 2 + dx ** 2 <= r ** 2,
                    "square": np.maximum(dy, dx) <= r * 0.85,
                    "triangle": (yy - cy >= -r) & (dx <= (yy - cy + r) / 2) & (yy - cy <= r),
                    "ring": np.abs(np.hypot(dy, dx) - r * 0.8) <= r * 0.25}[shape]
            img[:, mask] = rng.integers(0, 256, 3)[:, None]
            x.append(np.clip(img, 0, 255).astype(np.uint8))
            y.append(label)
    y = np.array(y)
    wrong = rng.random(len(y)) < label_noise
    y[wrong] = (y[wrong] + rng.integers(1, len(SHAPES), wrong.sum())) % len(SHAPES)
    return np.stack(x), np.array(SHAPES)[y]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_first_run_gate_on_a_hard_rgb_set(tmp_path, capsys):
    root = tmp_path / "ws"
    root.mkdir()
    # the default gate (no absolute thresholds, significance against the null model)
    promote = {"candidate": "teacher", "max_latency_ratio": None}
    write_params(root, {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 20},
                        "promote": promote})
    folder = write_png_folder(tmp_path / "hard", *hard_rgb())
    args = ["--workspace", str(root), "run", "--data", str(folder)]

    assert main([*args, "--set", "promote.min_accuracy=0.95"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "not promoted: gate min_accuracy failed, set by promote.min_accuracy"
    assert load_registry(Workspace(root).registry)["champion"] is None

    assert main(args) == 0  # only promote reruns: its params changed
    out = capsys.readouterr().out
    metrics = read_json(Workspace(root).reports / "metrics.json")
    teacher, null = metrics["teacher"], metrics["null_model"]
    assert 0.55 <= teacher["accuracy"] <= 0.75, teacher["accuracy"]  # a hard set indeed
    assert teacher["vs_null"]["pvalue"] < 0.05 and teacher["accuracy"] > null["accuracy"]
    assert "verdict: promoted" in out
    assert load_registry(Workspace(root).registry)["champion"] is not None
