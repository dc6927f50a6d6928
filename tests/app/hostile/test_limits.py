"""Trees, lines, sizes and archives a reader must not follow to the end: refused from the headers."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib

import numpy as np

from tests.app.hostile.helpers import (
    png_bytes,
    png_claiming,
    refuse,
)
from tests.conftest import TINY_PARAMS, write_params

# --- trees, lines and sizes a reader must not follow to the end --------------------------

def test_a_very_deep_tree_is_refused_by_name_without_recursion(ws, src, capsys):
    levels = [os.fsencode(src)]
    os.makedirs(levels[0])
    for _ in range(1200):  # past Python's recursion limit, under PATH_MAX
        levels.append(levels[-1] + b"/d")
        os.mkdir(levels[-1])
    with open(levels[-1] + b"/x.png", "wb") as fh:
        fh.write(b"junk")
    try:
        refuse(ws, capsys, ["ingest", str(src)], "deeper than 32 levels")
    finally:  # bottom up: pytest's own clean-up recurses and would fail on this tree
        os.unlink(levels[-1] + b"/x.png")
        for level in reversed(levels):
            os.rmdir(level)


def test_an_endless_csv_line_is_refused_after_the_limit(ws, src, capsys):
    src.mkdir(parents=True)
    with open(src / "big.csv", "w") as fh:
        fh.write("label," + "1," * 2_500_000)  # 5 MB, no newline: past max_csv_line_bytes (4 MiB)
    refuse(ws, capsys, ["ingest", str(src / "big.csv")], "big.csv: line 1 is longer than")


def test_a_labels_csv_with_an_endless_line_is_refused(ws, src, capsys):
    src.mkdir(parents=True)
    (src / "a.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    (src / "labels.csv").write_text("file,label\n" + "a.png," + "x" * 5_000_000)
    refuse(ws, capsys, ["ingest", str(src)], "labels.csv: line 2 is longer than")


def test_pngs_adding_up_past_the_free_disk_are_refused_from_the_headers(ws, src, capsys,
                                                                      monkeypatch):
    import shutil

    (src / "0").mkdir(parents=True)
    body = zlib.compress(b"\0" * (4097 * 4096))  # a real 4096x4096 image of zeros: ~16 KB
    for i in range(40):  # 0.7 MB of files that would hold 671 M pixels at their own size
        (src / "0" / f"{i}.png").write_bytes(png_claiming(4096, 4096, body, compressed=True))
    write_params(ws.root, {**TINY_PARAMS, "ingest": {"image_size": [4096, 4096]}})
    usage = shutil.disk_usage(ws.root)  # past max_batch_pixels a folder is staged on disk:
    monkeypatch.setattr("tasks.ingest.staging.shutil.disk_usage",  # say the disk has 1 GB free
                        lambda path: usage._replace(free=10**9))
    err = refuse(ws, capsys, ["ingest", str(src)], "40 images at 1x4096x4096 need 1.5 GB on disk")
    assert "1.0 GB free" in err
    assert not (ws.batches.parent / ".staging").exists()  # nothing decoded, nothing left


def test_an_idx_header_claiming_a_billion_images_is_refused(ws, src, capsys):
    src.mkdir(parents=True)
    (src / "train-images-idx3-ubyte").write_bytes(struct.pack(">4B3I", 0, 0, 8, 3, 10**9, 28, 28))
    (src / "train-labels-idx1-ubyte").write_bytes(struct.pack(">4BI", 0, 0, 8, 1, 10**9))
    refuse(ws, capsys, ["ingest", str(src)], "train-images-idx3-ubyte: header says")


def test_a_small_float64_npz_past_the_pixel_budget_is_refused_before_loading(ws, src, capsys):
    src.mkdir(parents=True)
    np.savez_compressed(src / "f.npz", x=np.zeros((3000, 64, 64)), y=np.zeros(3000, int))
    params = {**TINY_PARAMS, "ingest": {"max_batch_pixels": 10_000_000}}
    write_params(ws.root, params)
    refuse(ws, capsys, ["ingest", str(src / "f.npz")], "f.npz: array 'x' of shape (3000, 64, 64)")


def test_a_csv_past_the_pixel_budget_is_refused_while_reading(ws, src, capsys):
    src.mkdir(parents=True)
    (src / "p.csv").write_text("".join(f"{i % 10}," + ",".join(["0"] * 64) + "\n" for i in range(500)))
    write_params(ws.root, {**TINY_PARAMS, "ingest": {"max_batch_pixels": 64 * 100}})
    refuse(ws, capsys, ["ingest", str(src / "p.csv")], "p.csv: more than 100 rows")


# --- archives ------------------------------------------------------------------------------

def test_a_tar_member_with_an_undecodable_name_is_named_escaped(ws, src, capsys):
    src.mkdir(parents=True)
    with tarfile.open(src / "t.tar", "w", encoding="utf-8", errors="surrogateescape") as tf:
        data = b"not a png"
        info = tarfile.TarInfo("d/0/\udcff\n.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    refuse(ws, capsys, ["ingest", str(src / "t.tar")], "\\xff\\x0a.png")


def test_a_zip_of_header_bombs_is_refused_from_the_headers(ws, src, capsys):
    src.mkdir(parents=True)
    with zipfile.ZipFile(src / "z.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"0/{i}.png", png_claiming(50_000, 50_000))
    refuse(ws, capsys, ["ingest", str(src / "z.zip")], "max_image_pixels")
