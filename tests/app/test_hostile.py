"""Hostile and broken input, generated here: at least one case per class (special files,
links out, undecodable names, deep trees, endless lines, memory, injection) and per reader
(folder, IDX, NPZ, CSV, zip, tar, labels CSV). Each refusal is exit 2 with one line naming
the file and never quoting it, no traceback, the dataset, its DVC hash and the registry
unchanged, nothing written outside the workspace, nothing private copied in, within a
deadline (so a hang fails the test, not the CI run)."""

from __future__ import annotations

import io
import os
import signal
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from evergreen import dvcfile
from tests.conftest import TINY_PARAMS, copy_workspace, lock_is_free, write_params, write_png_folder

SECRET = "EVERGREEN-PRIVATE-e1f0c3"  # planted in files a reader must never quote or copy
DEADLINE_S = 60


@pytest.fixture(autouse=True)
def deadline():
    """A hung read fails the test after DEADLINE_S instead of hanging CI."""
    def expire(signum, frame):
        raise TimeoutError(f"no answer within {DEADLINE_S} s: a read hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def template(tmp_path_factory, digits):
    """A workspace with one landed batch (250 digits as PNG) and a champion (untrained)."""
    import nets
    from evergreen.workspace import Workspace
    from mains.versions import save_registry
    from nets.io import save_model
    from tasks.promote import empty_registry

    base = tmp_path_factory.mktemp("template")
    ws = Workspace(base / "ws")
    ws.root.mkdir()
    write_params(ws.root, TINY_PARAMS)
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:25] for c in range(10)])
    assert main(["--workspace", str(ws.root), "ingest",
                 str(write_png_folder(base / "png", digits.x[keep], digits.labels[keep]))]) == 0
    model = nets.build_model("seed_cnn", (1, 8, 8), 10).eval()
    card = {"arch": "seed_cnn", "options": {}, "in_shape": [1, 8, 8],
            "classes": [str(c) for c in range(10)], "mean": [0.3], "std": [0.3]}
    save_model(model, card, ws.root / "models" / "versions" / "v1")
    registry = empty_registry()
    registry["versions"]["v1"] = {"sha256": "0", "path": "models/versions/v1", "created_at": "now"}
    registry["champion"] = "v1"
    save_registry(ws.registry, registry)
    return ws


@pytest.fixture
def ws(template, tmp_path):
    return copy_workspace(template, tmp_path)


@pytest.fixture
def src(tmp_path):
    """Where a case builds its source, beside a home-like folder holding private files."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n")
    (home / ".env").write_text(f"API_KEY={SECRET}\n")
    (home / "outside.csv").write_text(f"{SECRET},1,2,3\n")
    (home / "outside.png").write_bytes(png_bytes(np.full((8, 8), 7, np.uint8)))
    return home / "src"


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int, data: bytes = b"\0" * 64, compressed: bool = False) -> bytes:
    """A PNG whose header claims width x height 8-bit gray pixels over `data` (valid CRCs)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = data if compressed else zlib.compress(data)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_images(folder: Path, digits, n: int = 4, label: str = "0") -> None:
    (folder / label).mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(digits.labels == label)[:n]:
        (folder / label / f"g{i}.png").write_bytes(png_bytes(digits.x[i, 0]))


# --- the checks every refusal passes ----------------------------------------------------

def tree(root: Path) -> set[str]:
    """Every path under root, relative (walked without recursion: a case holds a deep tree)."""
    found, stack = set(), [str(root)] if root.exists() else []
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                found.add(os.path.relpath(entry.path, root))
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return found


def state(ws) -> tuple:
    """What must not change: the batches, the DVC hash of the data, the registry."""
    batches = {p.name: p.read_bytes() for p in ws.batches.iterdir()}
    return batches, dvcfile.data_version(ws.root), ws.registry.read_bytes()


def assert_nothing_private_in(ws) -> None:
    for path in ws.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
    for path in ws.quarantine.rglob("*") if ws.quarantine.exists() else []:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"  # files and folders


def refuse(ws, capsys, args: list[str], names: str, code: int = 2) -> str:
    """Run `evergreen ARGS`; assert the refusal and everything it must leave alone."""
    outside = ws.root.parent
    before, around = state(ws), tree(outside) - tree(ws.root) - {"ws"}
    rc = main(["--workspace", str(ws.root), *args])
    out, err = capsys.readouterr()
    assert rc == code, err
    assert names in err, err
    assert "Traceback" not in err and SECRET not in err + out
    assert state(ws) == before
    assert {p for p in tree(outside) if not p.startswith("ws")} == {
        p for p in around if not p.startswith("ws")}
    assert_nothing_private_in(ws)
    for path in ws.quarantine.rglob("reasons.txt") if ws.quarantine.exists() else []:
        assert SECRET not in path.read_text()
    return err


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


# --- names and labels that are not plain text ----------------------------------------------

@pytest.fixture
def fresh(tmp_path):
    """An empty workspace whose validation accepts small classes."""
    from evergreen.workspace import Workspace

    ws = Workspace(tmp_path / "fresh")
    ws.root.mkdir()
    write_params(ws.root, {**TINY_PARAMS, "validate": {"min_samples_per_class": 5}})
    return ws


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


def test_pngs_with_large_declared_sizes_are_refused_from_the_headers(ws, src, capsys):
    (src / "0").mkdir(parents=True)
    body = zlib.compress(b"\0" * (4097 * 4096))  # a real 4096x4096 image of zeros: ~16 KB
    for i in range(40):  # 0.7 MB of files that would hold 671 M pixels at their own size
        (src / "0" / f"{i}.png").write_bytes(png_claiming(4096, 4096, body, compressed=True))
    write_params(ws.root, {**TINY_PARAMS, "ingest": {"image_size": [4096, 4096]}})
    refuse(ws, capsys, ["ingest", str(src)], "40 images at 1x4096x4096: 671088640 pixel values")


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


@pytest.fixture
def root_handlers():
    """`evergreen watch` sets up Prefect's console logging; take it down after the test, so
    its handler does not write into a later test's captured (closed) stream."""
    import logging

    before = logging.getLogger().handlers[:]
    yield
    logging.getLogger().handlers[:] = before


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
