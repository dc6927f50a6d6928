"""Pixel CSV tables: layouts and bad rows rejected by line and column."""


import numpy as np
import pytest

from tasks.ingest import Rejected
from tests.tasks.ingest.helpers import read, read_clean, refused, write_csv

# --- CSV ------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [True, False])
def test_csv_kaggle_layout_with_or_without_header(tmp_path, tiny_batch, header):
    path = write_csv(tmp_path / "train.csv", tiny_batch.x[:15], tiny_batch.labels[:15], header)

    batch = read_clean(path)

    np.testing.assert_array_equal(batch.x, tiny_batch.x[:15])
    np.testing.assert_array_equal(batch.labels, tiny_batch.labels[:15])
    assert batch.sources[0] == f"train.csv:{2 if header else 1}"


def test_csv_label_column_is_configurable(tmp_path, tiny_batch):
    path = write_csv(tmp_path / "d.csv", tiny_batch.x[:3], ["cat", "dog", "cat"], label_name="class")
    assert "set ingest.csv_label_column" in refused(path)
    assert list(read_clean(path, csv_label_column="class").labels) == ["cat", "dog", "cat"]


def test_csv_bad_rows_are_rejected_by_line_and_column(tmp_path, tiny_batch):
    path = write_csv(tmp_path / "train.csv", tiny_batch.x[:6], tiny_batch.labels[:6])
    lines = path.read_text().splitlines()
    for n, (col, value) in {2: (43, "abc"), 4: (1, ""), 5: (10, "300"), 6: (0, "")}.items():
        cells = lines[n - 1].split(",")
        cells[col] = value
        lines[n - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")

    batch, rejects = read(path)

    assert len(batch) == 2 and batch.sources == ["train.csv:3", "train.csv:7"]
    assert rejects == [
        Rejected("train.csv:2", "line 2: non-numeric pixel value in column pixel42"),
        Rejected("train.csv:4", "line 4: missing pixel value in column pixel0"),
        Rejected("train.csv:5", "line 5: pixel value in column pixel9 is not an integer in 0..255"),
        Rejected("train.csv:6", "line 6: missing label"),
    ]


def test_csv_wrong_column_counts_are_refused(tmp_path, tiny_batch):
    path = write_csv(tmp_path / "short.csv", tiny_batch.x[:3], tiny_batch.labels[:3])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # line 3 loses a column
    path.write_text("\n".join(lines) + "\n")
    assert refused(path) == "short.csv: line 3 has 64 columns, expected 65 like the header"

    odd = tmp_path / "odd.csv"
    odd.write_text("label,a,b,c\n1,0,0,0\n")
    assert refused(odd).startswith("odd.csv: 4 columns = 1 label + 3 pixels")
