"""Fixtures of the stage mains' tests."""

import pytest

from tests.conftest import write_idx_pair


@pytest.fixture
def tiny_idx(tmp_path, tiny_batch):
    folder = tmp_path / "idx"
    write_idx_pair(folder, tiny_batch.x, tiny_batch.labels.astype(int))
    return folder
