"""Fixtures the CLI and API tests share."""

import numpy as np
import pytest

from evergreen import dvcfile
from evergreen.config import Config
from evergreen.workspace import Workspace
from tests.conftest import TINY_PARAMS, write_params


@pytest.fixture(scope="session")
def champion_ws(tmp_path_factory, digits):
    """A workspace whose champion v1 is a tiny teacher trained on the first 1000 digits, with
    its ONNX export (how champions are served)."""
    from mains import call_main
    from mains.versions import save_registry, store_version
    from nets.io import ONNX, file_sha256, load_model
    from tasks.export import export_onnx
    from tasks.ingest import Batch, dedupe, write_batch
    from tasks.promote import empty_registry, now, record

    root = tmp_path_factory.mktemp("evaluate") / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    ws = Workspace(root)
    dvcfile.init_workspace(ws)
    idx = np.arange(1000)
    batch, hashes, _, _ = dedupe(Batch(digits.x[idx], digits.labels[idx],
                                       [digits.sources[i] for i in idx]), set())
    write_batch(batch, hashes, ws.batches)
    cfg = Config.model_validate(TINY_PARAMS)
    for stage in ("validate", "preprocess", "train"):
        call_main(stage, ws, cfg)
    model, card = load_model(ws.model_dir("teacher"))
    export_onnx(model, tuple(card["in_shape"]), ws.model_dir("teacher") / ONNX)
    registry = empty_registry()
    version = store_version(registry, ws.model_dir("teacher"), ws.versions,
                            file_sha256(ws.model_dir("teacher") / "model.safetensors"))
    entry = {"version": version, "verdict": "promoted", "reasons": [], "gates": [], "time": now(),
             "run_id": "fixture", "role": "teacher", "arch": card["arch"], "params_hash": "p",
             "metrics": {"accuracy": 1.0, "f1_macro": 1.0}, "champion_before": None,
             "data_version": None}
    save_registry(ws.registry, record(registry, entry, True, "fixture champion"))
    return ws
