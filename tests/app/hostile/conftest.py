"""The hostile-input tests' fixtures: a deadline, a template workspace with a champion, and a
source folder beside planted private files."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from app.cli import main
from tests.app.hostile.helpers import DEADLINE_S, SECRET, png_bytes
from tests.conftest import TINY_PARAMS, copy_workspace, write_params, write_png_folder


@pytest.fixture(autouse=True)
def deadline():
    """A hung read fails the test after DEADLINE_S instead of hanging CI."""
    def expire(signum, frame):
        raise TimeoutError(f"no answer within {DEADLINE_S} s: a read hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="package")
def template(tmp_path_factory, digits):
    """A workspace with one landed batch (250 digits as PNG) and a champion (untrained)."""
    import nets
    from evergreen.workspace import Workspace
    from mains.versions import save_registry
    from nets.io import save_model
    from tasks.promote import empty_registry

    base = tmp_path_factory.mktemp("template")
    ws = Workspace(base / "ws")
    ws.root.mkdir()
    write_params(ws.root, TINY_PARAMS)
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:25] for c in range(10)])
    assert main(["--workspace", str(ws.root), "ingest",
                 str(write_png_folder(base / "png", digits.x[keep], digits.labels[keep]))]) == 0
    model = nets.build_model("seed_cnn", (1, 8, 8), 10).eval()
    card = {"arch": "seed_cnn", "options": {}, "in_shape": [1, 8, 8],
            "classes": [str(c) for c in range(10)], "mean": [0.3], "std": [0.3]}
    save_model(model, card, ws.root / "models" / "versions" / "v1")
    registry = empty_registry()
    registry["versions"]["v1"] = {"sha256": "0", "path": "models/versions/v1", "created_at": "now"}
    registry["champion"] = "v1"
    save_registry(ws.registry, registry)
    return ws


@pytest.fixture
def ws(template, tmp_path):
    return copy_workspace(template, tmp_path)


@pytest.fixture
def src(tmp_path):
    """Where a case builds its source, beside a home-like folder holding private files."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")
    (home / ".env").write_text(f"API_KEY={SECRET}\n")
    (home / "outside.csv").write_text(f"{SECRET},1,2,3\n")
    (home / "outside.png").write_bytes(png_bytes(np.full((8, 8), 7, np.uint8)))
    return home / "src"


@pytest.fixture
def fresh(tmp_path):
    """An empty workspace whose validation accepts small classes."""
    from evergreen.workspace import Workspace

    ws = Workspace(tmp_path / "fresh")
    ws.root.mkdir()
    write_params(ws.root, {**TINY_PARAMS, "validate": {"min_samples_per_class": 5}})
    return ws


@pytest.fixture
def root_handlers():
    """`evergreen watch` sets up Prefect's console logging; take it down after the test, so
    its handler does not write into a later test's captured (closed) stream."""
    import logging

    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's own handlers exist before the snapshot, so they are kept

    before = logging.getLogger().handlers[:]
    yield
    logging.getLogger().handlers[:] = before
