"""Cases found by a red-team pass."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from app.cli import main
from tests.app.hostile.helpers import (
    good_images,
    png_bytes,
    refuse,
)
from tests.conftest import TINY_PARAMS, write_params

# --- found by a red-team pass ---------------------------------------------------------------

def test_a_relative_or_symlinked_folder_source_lands(fresh, tmp_path, monkeypatch, digits):
    good_images(tmp_path / "photos", digits, 6, "0")
    good_images(tmp_path / "photos", digits, 6, "1")
    (tmp_path / "link").symlink_to(tmp_path / "photos", target_is_directory=True)
    monkeypatch.chdir(fresh.root)
    assert main(["--workspace", str(fresh.root), "ingest", "../photos"]) == 0
    assert main(["--workspace", str(fresh.root), "ingest", str(tmp_path / "link")]) == 0


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder", "no-parent"])
def test_predict_csv_never_writes_through_a_special_file(ws, tmp_path, capsys, digits, kind):
    good_images(tmp_path / "score", digits, 1)
    out = tmp_path / "out.csv"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        (tmp_path / "target.csv").write_text("keep")
        out.symlink_to(tmp_path / "target.csv")
    elif kind == "folder":
        out.mkdir()
    else:
        out = tmp_path / "missing" / "out.csv"
    refuse(ws, capsys, ["predict", str(tmp_path / "score"), "--csv", str(out)], "--csv")
    if kind == "symlink":
        assert out.is_symlink() and (tmp_path / "target.csv").read_text() == "keep"
    if kind == "fifo":
        assert not out.is_file()


def test_an_npz_with_a_malformed_npy_header_is_refused(ws, src, capsys):
    src.mkdir(parents=True)
    with zipfile.ZipFile(src / "h.npz", "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr':__import__(" + b"\n")
        buf = io.BytesIO()
        np.save(buf, np.zeros(2, int))
        zf.writestr("y.npy", buf.getvalue())
    refuse(ws, capsys, ["ingest", str(src / "h.npz")], "h.npz: array 'x' has a malformed .npy header")


def test_roi_cells_with_non_ascii_digits_are_refused_rows(fresh, tmp_path, capsys):
    folder = tmp_path / "Images" / "0"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    (folder / "GT.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                   "a.png;8;8;\u00b2;0;6;6;0\n")
    write_params(fresh.root, {**TINY_PARAMS, "ingest": {"crop_roi": True}})
    assert main(["--workspace", str(fresh.root), "ingest", str(tmp_path / "Images")]) == 2
    err = capsys.readouterr().err
    assert "GT.csv:2" in err and "not whole numbers" in err and "Traceback" not in err


@pytest.mark.parametrize("setting", ["train.lr=" + "[" * 3000 + "]" * 3000, "train.lr=.inf",
                                     "ingest.read_timeout_s=1e300", "train.cnn.channels=[0]",
                                     "train.epochs=99999999999999999999"])
def test_nonsense_and_deeply_nested_settings_are_one_line_exit_2(ws, capsys, setting):
    assert main(["--workspace", str(ws.root), "run", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err) < 400 and setting.split("=")[0] in err


def test_a_float_tiff_with_nan_is_refused_not_zeroed(fresh, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "src" / "0").mkdir(parents=True)
    bad = np.full((8, 8), 0.5, np.float32)
    bad[0, 0] = np.nan
    Image.fromarray(bad, "F").save(tmp_path / "src" / "0" / "f.tif")
    assert main(["--workspace", str(fresh.root), "ingest", str(tmp_path / "src")]) == 2
    assert "0/f.tif: cannot decode image: NaN or inf pixel values" in capsys.readouterr().err
