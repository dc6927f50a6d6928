"""Special files and links out of the source: refused or skipped by name, never followed or quoted."""

from __future__ import annotations

import os

import numpy as np
import pytest

from app.cli import main
from tests.app.hostile.helpers import (
    SECRET,
    good_images,
    png_bytes,
    refuse,
    tree,
)

# --- special files ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x.csv", "x.npz", "x"])
def test_a_fifo_source_is_refused_without_opening_it(ws, src, capsys, name):
    src.mkdir(parents=True)
    os.mkfifo(src / name)
    refuse(ws, capsys, ["ingest", str(src / name)], name)


@pytest.mark.parametrize("name", ["x.csv", "x.npz", "train-labels-idx1-ubyte"])
def test_fifos_inside_a_folder_are_skipped_by_name(ws, src, capsys, name):
    src.mkdir(parents=True)
    os.mkfifo(src / name)
    refuse(ws, capsys, ["ingest", str(src)], name)


def test_fifo_and_socket_beside_images_are_skipped_and_named(ws, src, capsys, digits):
    import socket

    good_images(src, digits, 12)
    os.mkfifo(src / "0" / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "0" / "s"))
    try:
        assert main(["--workspace", str(ws.root), "ingest", str(src)]) in (0, 2)
    finally:
        sock.close()
    out = capsys.readouterr().out
    assert "0/pipe.png: not a regular file" in out and "0/s: not a regular file" in out


# --- links out of the source --------------------------------------------------------------

@pytest.mark.parametrize("name, target", [("data.csv", "outside.csv"), ("data.npz", "outside.csv"),
                                          ("train-images-idx3-ubyte", "outside.csv"),
                                          ("0/img.png", "outside.png"),
                                          ("labels.csv", "outside.csv")])
def test_a_link_out_of_the_source_is_refused_and_never_quoted(ws, src, capsys, name, target):
    (src / name).parent.mkdir(parents=True)
    (src / name).symlink_to(src.parent / target)
    if name == "labels.csv":  # beside flat images, as a labels CSV would be
        (src / "a.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    refuse(ws, capsys, ["ingest", str(src)], name)


def test_private_files_beside_a_bad_source_are_never_copied(ws, tmp_path, capsys):
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")
    (home / ".env").write_text(f"API_KEY={SECRET}\n")
    (home / "notes.txt").write_text(f"{SECRET}\n")
    (home / "mnist.csv").write_text("label,a,b,c\n1,0,0,0\n")  # 3 pixels: not H*H
    err = refuse(ws, capsys, ["ingest", str(home)], "mnist.csv")
    (held,) = [p for p in ws.quarantine.iterdir()]
    assert sorted(tree(held / "files")) == ["mnist.csv"]
    assert "kept in" in err
