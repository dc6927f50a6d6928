"""evergreen predict and watch on hostile input, and the shared mechanisms (deadline, names)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from app.cli import main
from tests.app.hostile.helpers import (
    good_images,
    png_claiming,
    refuse,
)
from tests.conftest import TINY_PARAMS, lock_is_free, write_params

# --- evergreen predict ----------------------------------------------------------------------

def test_predict_refuses_eps_bombs_and_fifos_and_scores_a_folder(ws, tmp_path, capsys, digits):
    folder = tmp_path / "score"
    good_images(folder, digits, 3)
    (folder / "x.eps").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")
    (tmp_path / "eps.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")
    (tmp_path / "bomb.png").write_bytes(png_claiming(11_000, 11_000))  # 121 megapixels
    os.mkfifo(tmp_path / "pipe.png")
    for bad, names in (("eps.png", "not a PNG"), ("bomb.png", "max_image_pixels"),
                       ("pipe.png", "not a regular file")):
        refuse(ws, capsys, ["predict", str(tmp_path / bad)], names)
    out = tmp_path / "p.csv"
    assert main(["--workspace", str(ws.root), "predict", str(folder), "--csv", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].startswith("path,class,probability,0,1") and len(rows) == 4
    assert all(r.split(",")[0].startswith(f"{folder}/0/g") for r in rows[1:])


def test_predict_without_a_champion_is_exit_2(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    assert main(["--workspace", str(tmp_path / "w"), "predict", "x.png"]) == 2
    assert "no champion yet" in capsys.readouterr().err


# --- the shared mechanisms ---------------------------------------------------------------

def test_the_read_deadline_stops_a_slow_read(tmp_path):
    import time

    from tasks.ingest.safe_files import UnreadableFile, deadline

    signal.setitimer(signal.ITIMER_REAL, 0)  # this test's own timer, not the suite's
    with pytest.raises(UnreadableFile, match="slow.png: reading took longer"), deadline(0.2, "slow.png"):
        time.sleep(5)


def test_display_names_escape_controls_and_raw_bytes_unambiguously():
    from tasks.ingest import csv_cell, display_name, from_csv_cell

    assert display_name("a\nb") == "a\\x0ab"
    assert display_name("caf\udce9") == "caf\\xe9"  # a raw byte that was not UTF-8
    assert display_name("caf\\xe9") == "caf\\\\xe9"  # a real backslash stays distinguishable
    assert display_name("\u2028") == "\\u2028"
    for text in ("=1", "+1", "-1", "@a", "'a", "a"):
        assert from_csv_cell(csv_cell(text)) == text


@pytest.mark.usefixtures("root_handlers")
def test_watch_refuses_a_fifo_drop_and_releases_the_lock(ws, tmp_path, capsys):
    drops = tmp_path / "drops"
    drops.mkdir()
    os.mkfifo(drops / "x.csv")
    write_params(ws.root, {**TINY_PARAMS, "watch": {"quiet_seconds": 0.2}})
    assert main(["--workspace", str(ws.root), "watch", str(drops), "--once"]) == 2
    assert lock_is_free(ws.root)
    assert (drops / ".failed" / "x.csv").exists()  # kept, not deleted
    assert "Traceback" not in capsys.readouterr().err


def test_an_endless_quoted_csv_record_is_refused_after_the_limit(ws, src, capsys):
    src.mkdir(parents=True)
    record = '1,"' + "0\n" * 40_000 + '"\n'  # short lines, one record: a field over 40,000 lines
    (src / "q.csv").write_text("label,p\n" + record)
    write_params(ws.root, {**TINY_PARAMS, "ingest": {"max_csv_line_bytes": 65536}})
    refuse(ws, capsys, ["ingest", str(src / "q.csv")], "q.csv: record (a quoted field")


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_max_image_pixels_holds_for_array_formats(ws, src, capsys, fmt):
    src.mkdir(parents=True)
    write_params(ws.root, {**TINY_PARAMS, "ingest": {"max_image_pixels": 100}})
    if fmt == "npz":
        np.savez(src / "a.npz", x=np.zeros((2, 11, 11), np.uint8), y=np.zeros(2, int))
    else:
        (src / "a.csv").write_text("label," + ",".join(f"p{i}" for i in range(121)) + "\n")
    refuse(ws, capsys, ["ingest", str(src / f"a.{fmt}")], "max_image_pixels 100")
