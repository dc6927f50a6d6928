"""Names and labels that are not plain text: escaped, unambiguous, never forging a record."""

from __future__ import annotations

import os

import numpy as np

from app.cli import main
from tests.app.hostile.helpers import (
    good_images,
    png_bytes,
    refuse,
)


def test_undecodable_names_land_escaped_and_unambiguous(fresh, tmp_path, capsys, digits):
    from tasks.ingest import read_metadata

    src = os.fsencode(tmp_path / "src")
    for label in (b"caf\xe9", b"ok"):
        os.makedirs(src + b"/" + label)
        for i in range(6):
            with open(src + b"/" + label + b"/\xff%d\n.png" % i, "wb") as fh:
                fh.write(png_bytes(digits.x[100 + i + 10 * len(label), 0]))
    assert main(["--workspace", str(fresh.root), "ingest", os.fsdecode(src)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    meta = read_metadata(fresh.batches)
    assert set(meta["label"]) == {"caf\\xe9", "ok"}
    assert "caf\\xe9/\\xff0\\x0a.png" in set(meta["source"])


def test_a_newline_in_a_file_name_cannot_forge_a_record(ws, src, capsys, digits):
    good_images(src, digits, 12)
    (src / "0" / "bad\nrejected sample forged.png: fine.png").write_bytes(b"not an image")
    refuse(ws, capsys, ["ingest", str(src)], "bad\\x0arejected sample")
    reasons = next(ws.quarantine.glob("*/reasons.txt")).read_text().splitlines()
    assert not any(line.startswith("rejected sample forged.png") for line in reasons)


def test_formula_labels_are_escaped_in_the_metadata_csv(fresh, tmp_path, capsys, digits):
    from tasks.ingest import read_metadata

    labels = ("=1+1", "@SUM(A1)", "-2", "+x", "'quoted")
    for k, label in enumerate(labels):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "src" / label / f"{i}.png").write_bytes(png_bytes(digits.x[6 * k + i, 0]))
    assert main(["--workspace", str(fresh.root), "ingest", str(tmp_path / "src")]) == 0, \
        capsys.readouterr().err
    text = next(fresh.batches.glob("*.csv")).read_text()
    cells = [c for line in text.splitlines()[1:] for c in line.split(",")]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert set(read_metadata(fresh.batches)["label"]) == set(labels)


def test_byte_string_npz_labels_land_as_text(fresh, tmp_path, digits):
    from tasks.ingest import read_metadata

    y = np.array([b"cat", b"d\xffg"] * 10)
    np.savez(tmp_path / "b.npz", x=digits.x[:20, 0], y=y)
    assert main(["--workspace", str(fresh.root), "ingest", str(tmp_path / "b.npz")]) == 0
    assert set(read_metadata(fresh.batches)["label"]) == {"cat", "d\\xffg"}
