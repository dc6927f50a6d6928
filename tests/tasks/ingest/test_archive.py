"""Zip and tar sources: read like folders; slips, links, devices and bombs refused."""

import io
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest.archive import Sink
from tests.conftest import write_idx_pair, write_png_folder
from tests.tasks.ingest.helpers import IMAGES, index_of, png_bytes, read_clean, refused, write_csv

# --- archives -------------------------------------------------------------------------

def test_zip_of_png_folder(tmp_path, tiny_batch, private_tmp):
    root = write_png_folder(tmp_path / "digits_png", tiny_batch.x[:20], tiny_batch.labels[:20])
    archive = tmp_path / "pngs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*.png")):
            zf.write(path, Path("digits_png") / path.relative_to(root))
        zf.writestr("__MACOSX/digits_png/._junk", b"resource fork")

    batch = read_clean(archive)

    assert batch.x.shape == (20, 1, 8, 8)
    assert set(batch.labels) == set(tiny_batch.labels[:20])
    for img, source in zip(batch.x, batch.sources, strict=True):
        assert source.startswith("pngs.zip:digits_png/")
        np.testing.assert_array_equal(img, tiny_batch.x[index_of(source)])


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_tar_of_idx_pair(tmp_path, tiny_batch, private_tmp, mode):
    img_path, _ = write_idx_pair(tmp_path / "mnist", tiny_batch.x, tiny_batch.labels.astype(int), gz=True)
    archive = tmp_path / ("mnist.tar.gz" if mode == "w:gz" else "mnist.tar")
    with tarfile.open(archive, mode) as tf:
        tf.add(tmp_path / "mnist", arcname="mnist")

    batch = read_clean(archive)

    np.testing.assert_array_equal(batch.x, tiny_batch.x)
    assert batch.sources[0] == f"{archive.name}:mnist/{img_path.name}[0]"


@pytest.mark.parametrize("fmt", ["npz_in_zip", "csv_in_tgz"])
def test_archive_of_one_data_file(tmp_path, tiny_batch, private_tmp, fmt):
    x, y = tiny_batch.x[:10], tiny_batch.labels[:10]
    if fmt == "npz_in_zip":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        archive = tmp_path / "d.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(tmp_path / "d.npz", "d.npz")
    else:
        write_csv(tmp_path / "d.csv", x, y)
        archive = tmp_path / "d.tgz"
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(tmp_path / "d.csv", arcname="export/d.csv")

    batch = read_clean(archive)

    np.testing.assert_array_equal(batch.x, x)
    assert batch.sources[0] in ("d.zip:d.npz[0]", "d.tgz:export/d.csv:2")


def test_error_inside_an_archive_names_the_member(tmp_path, tiny_batch, private_tmp):
    img_path, _ = write_idx_pair(tmp_path / "mnist", tiny_batch.x, tiny_batch.labels.astype(int))
    img_path.write_bytes(img_path.read_bytes()[:-64])
    with tarfile.open(tmp_path / "m.tgz", "w:gz") as tf:
        tf.add(tmp_path / "mnist", arcname="mnist")
    assert refused(tmp_path / "m.tgz").startswith(f"m.tgz:mnist/{IMAGES}: truncated IDX")


@pytest.mark.parametrize("evil", ["../evil.png", "a/../../evil.png", "ABSOLUTE"])
def test_zip_slip_is_refused_and_nothing_is_written_outside(tmp_path, private_tmp, evil):
    evil = str(tmp_path / "abs" / "evil.png") if evil == "ABSOLUTE" else evil
    archive = tmp_path / "deep" / "er" / "slip.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("0/00000.png", png_bytes(np.zeros((8, 8), np.uint8)))
        zf.writestr(evil, png_bytes(np.ones((8, 8), np.uint8)))

    msg = refused(archive)

    assert "slip.zip" in msg and evil in msg and "zip slip" in msg
    assert [p for p in tmp_path.rglob("*") if "evil" in p.name] == []


@pytest.mark.parametrize("kind, target", [
    (tarfile.SYMTYPE, "/etc/passwd"),
    (tarfile.SYMTYPE, "../../etc/passwd"),
    (tarfile.LNKTYPE, "../outside.png"),
])
def test_tar_link_pointing_outside_is_refused(tmp_path, private_tmp, kind, target):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        data = png_bytes(np.zeros((8, 8), np.uint8))
        info = tarfile.TarInfo("0/00000.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("0/passwd.png")
        link.type, link.linkname = kind, target
        tf.addfile(link)

    msg = refused(archive)
    assert "links.tar" in msg and "0/passwd.png" in msg and "outside the archive" in msg


def test_tar_chained_symlinks_that_escape_are_refused(tmp_path, private_tmp):
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tf:
        for name, target in [("a", "."), ("a/b/l", "../../x")]:  # lexically inside, not on disk
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tf.addfile(link)
    assert "points outside the archive" in refused(archive)


def test_tar_with_a_device_or_fifo_is_refused(tmp_path, private_tmp):
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tf:
        fifo = tarfile.TarInfo("0/pipe.png")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    assert "device, fifo" in refused(archive)


def test_archive_limits_are_checked_from_the_headers_and_while_extracting(tmp_path, private_tmp):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"0/{i}.png", b"\0" * 1000)

    assert "max_archive_members 4" in refused(archive, max_archive_members=4)
    assert "max_archive_bytes 4999" in refused(archive, max_archive_bytes=4999)
    sink = Sink(private_tmp, IngestConfig(max_archive_bytes=10), "lies.zip")
    with pytest.raises(BadInputError, match="lies.zip: more than ingest.max_archive_bytes 10"):
        sink.write(PurePosixPath("f"), io.BytesIO(b"x" * (2 << 20)))  # more than its header said
    (private_tmp / "f").unlink()
