"""Whole-source problems: missing, empty, or inside the workspace."""


import numpy as np
import pytest

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest import read_source
from tests.conftest import write_idx_pair, write_png_folder
from tests.tasks.ingest.helpers import refused

# --- whole-source problems ------------------------------------------------------------

def test_missing_path_is_refused(tmp_path):
    msg = refused(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg and "no such file or directory" in msg


@pytest.mark.parametrize("make", ["empty_folder", "header_only_csv", "empty_idx"])
def test_empty_source_is_refused(tmp_path, make):
    if make == "empty_folder":
        source = tmp_path / "empty"
        source.mkdir()
        (source / "7").mkdir()
    elif make == "header_only_csv":
        source = tmp_path / "empty.csv"
        source.write_text("label,pixel0,pixel1,pixel2,pixel3\n")
    else:
        write_idx_pair(tmp_path / "idx", np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0))
        source = tmp_path / "idx"
    msg = refused(source)
    assert str(source.name) in msg and ("empty source" in msg or "no images" in msg)


@pytest.mark.parametrize("folder", ["data", "models", "."])
def test_source_inside_the_workspace_data_or_models_is_refused(workspace, tiny_batch, folder):
    root = write_png_folder(workspace.root / folder / "incoming", tiny_batch.x[:2], tiny_batch.labels[:2])

    with pytest.raises(BadInputError) as err:
        read_source(str(root if folder != "." else workspace.root), IngestConfig(),
                    workspace=workspace.root)

    assert ("lies inside" if folder != "." else "contains") in str(err.value)
    assert "data/" in str(err.value) or "models/" in str(err.value)
