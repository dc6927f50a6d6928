"""Feedback: served inputs are kept within a count and a byte budget (the oldest rotate out),
a labelled one becomes a PNG of the same pixels, and a full batch moves to the drop folder."""

import numpy as np
import pytest
from PIL import Image

from tasks.serve import FeedbackError, FeedbackStore


def store(tmp_path, keep=100, keep_bytes=1 << 20, batch=2):
    return FeedbackStore(tmp_path / "pending", tmp_path / "drops", batch, keep, ".ready", keep_bytes)


def test_served_inputs_rotate_out_past_the_byte_budget(tmp_path):
    served = store(tmp_path, keep=100, keep_bytes=3 * 3 * 32 * 32)  # three 3x32x32 images
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    served.remember([f"id{i}" for i in range(5)], x)
    assert list(served.served) == ["id2", "id3", "id4"] and served.held == 3 * x[0].nbytes
    with pytest.raises(FeedbackError, match="rotated out") as refused:
        served.label("id0", "cat")
    assert refused.value.status == 404
    served.label("id3", "cat")
    assert served.held == 2 * x[0].nbytes
    saved = np.asarray(Image.open(tmp_path / "pending" / "cat" / "id3.png"))
    assert (saved == x[3].transpose(1, 2, 0)).all()


def test_served_inputs_rotate_out_past_the_count(tmp_path):
    served = store(tmp_path, keep=2)
    served.remember(["a", "b", "c"], np.zeros((3, 1, 4, 4), np.uint8))
    assert list(served.served) == ["b", "c"] and served.held == 32


def test_a_full_batch_moves_to_the_drop_folder_with_the_marker(tmp_path):
    served = store(tmp_path, batch=2)
    served.remember(["a", "b"], np.full((2, 1, 4, 4), 7, np.uint8))
    assert served.label("a", "7") is None
    batch = served.label("b", "7")
    assert batch.parent == tmp_path / "drops" and (batch / ".ready").exists()
    assert sorted(p.name for p in (batch / "7").iterdir()) == ["a.png", "b.png"]
