"""Readers: every source format read right, and dirty or hostile input refused by name."""

import gzip
import io
import os
import shutil
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest import ReadLog, Rejected, load_digits_batch, read_idx, read_source
from tasks.ingest.archive import Sink
from tests.conftest import write_idx_pair, write_png_folder

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


def read(source, **cfg):
    return read_source(str(source), IngestConfig(**cfg))


def read_clean(source, **cfg):
    batch, rejects = read(source, **cfg)
    assert rejects == []
    return batch


def refused(source, **cfg) -> str:
    """The BadInputError message for a whole-source problem (exit code 2)."""
    with pytest.raises(BadInputError) as err:
        read(source, **cfg)
    assert err.value.exit_code == 2
    return str(err.value)


def index_of(source: str) -> int:
    """write_png_folder names files by the sample's index: '<label>/.../00042.png' -> 42."""
    return int(source.rsplit("/", 1)[-1].split(".")[0])


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height pixels (valid CRCs) over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Make the readers' private temp folders observable (and assert they are cleaned up)."""
    folder = tmp_path / "private-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == []


# --- digits ---------------------------------------------------------------------------

def test_digits_batch_is_uint8_nchw_with_ten_string_labels(digits):
    assert digits.x.shape == (1797, 1, 8, 8)
    assert digits.x.dtype == np.uint8
    assert digits.x.min() == 0 and digits.x.max() == 255
    assert sorted(set(digits.labels)) == [str(c) for c in range(10)]
    assert len(digits.sources) == len(digits) == 1797


def test_read_source_digits_is_the_bundled_set(digits):
    again = read_clean("digits")
    np.testing.assert_array_equal(again.x, digits.x)
    np.testing.assert_array_equal(again.labels, load_digits_batch().labels)


# --- image folders --------------------------------------------------------------------

def test_grayscale_png_folder_with_nested_subfolders(tmp_path, tiny_batch):
    from PIL import Image

    x, labels = tiny_batch.x[:30], tiny_batch.labels[:30]
    root = write_png_folder(tmp_path / "imgs", x[:20], labels[:20])
    for i in range(20, 30):  # root/<label>/deeper/more/*.png: the label is still the top folder
        folder = root / labels[i] / "deeper" / "more"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0]).save(folder / f"{i:05d}.png")

    batch = read_clean(root)

    assert batch.x.shape == (30, 1, 8, 8) and batch.x.dtype == np.uint8
    for img, label, source in zip(batch.x, batch.labels, batch.sources, strict=True):
        assert label == labels[index_of(source)]
        np.testing.assert_array_equal(img, x[index_of(source)])  # PNG is lossless
    assert sum("deeper" in s for s in batch.sources) == 10


def test_rgb_png_folder_reads_three_channels(tmp_path, tiny_batch):
    gray = tiny_batch.x[:12]
    rgb = np.concatenate([gray, 255 - gray, gray // 2], axis=1)  # (12, 3, 8, 8)
    root = write_png_folder(tmp_path / "rgb", rgb, tiny_batch.labels[:12])

    batch = read_clean(root)

    assert batch.x.shape == (12, 3, 8, 8)
    for img, source in zip(batch.x, batch.sources, strict=True):
        np.testing.assert_array_equal(img, rgb[index_of(source)])


def test_mixed_gray_and_rgb_become_rgb_unless_grayscale_forced(tmp_path, tiny_batch):
    from PIL import Image

    gray = tiny_batch.x[:4]
    root = write_png_folder(tmp_path / "mix", gray[:2], np.array(["a", "a"]))
    rgb = np.concatenate([gray[2:], 255 - gray[2:], gray[2:] // 3], axis=1)
    write_png_folder(tmp_path / "tmp", rgb, np.array(["b", "b"]))
    shutil.move(tmp_path / "tmp" / "b", root / "b")

    mixed = read_clean(root)
    forced = read_clean(root, grayscale=True)

    assert mixed.x.shape == (4, 3, 8, 8)
    a = mixed.x[mixed.labels == "a"]
    np.testing.assert_array_equal(a[:, 0], a[:, 1])  # gray replicated across channels
    assert forced.x.shape == (4, 1, 8, 8)
    assert list(forced.labels) == ["a", "a", "b", "b"]
    pil_gray = np.asarray(Image.fromarray(rgb[0].transpose(1, 2, 0)).convert("L"))
    np.testing.assert_array_equal(forced.x[2, 0], pil_gray)


def test_jpeg_and_bmp_folders(tmp_path, tiny_batch):
    from PIL import Image

    for i, (img, label) in enumerate(zip(tiny_batch.x[:6], tiny_batch.labels[:6], strict=True)):
        (tmp_path / "src" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(tmp_path / "src" / label / f"{i:05d}.{('jpg', 'bmp')[i % 2]}")

    batch = read_clean(tmp_path / "src")

    assert batch.x.shape == (6, 1, 8, 8)
    for img, label, source in zip(batch.x, batch.labels, batch.sources, strict=True):
        assert label == tiny_batch.labels[index_of(source)]
        if source.endswith(".bmp"):  # lossless
            np.testing.assert_array_equal(img, tiny_batch.x[index_of(source)])


def test_mixed_image_sizes_follow_image_size_auto_or_the_given_size(tmp_path, tiny_batch):
    from PIL import Image

    root = write_png_folder(tmp_path / "sizes", tiny_batch.x[:3], np.array(["0"] * 3))
    (root / "1").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "1" / "odd.png")

    log = ReadLog()
    batch, rejects = read_source(str(root), IngestConfig(), log=log)
    assert batch.x.shape == (4, 1, 8, 8) and rejects == []  # the median size, and said so
    assert any(n.startswith("image_size auto: 8x8") for n in log.notes)
    assert "12x10->8x8 stretch" in batch.decoded[batch.sources.index("1/odd.png")]

    resized = read_clean(root, image_size=[12, 10])
    assert resized.x.shape == (4, 1, 12, 10)  # [H, W]


@pytest.mark.parametrize("grayscale", [None, True])
@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_png_is_rejected_by_name(tmp_path, tiny_batch, grayscale, content):
    root = write_png_folder(tmp_path / "bad", tiny_batch.x[:3], tiny_batch.labels[:3])
    good = (root / tiny_batch.labels[0] / "00000.png").read_bytes()
    data = b"this is not a PNG" if content == "garbage" else good[: len(good) // 2]
    (root / tiny_batch.labels[0] / "broken.png").write_bytes(data)

    batch, rejects = read(root, grayscale=grayscale)

    assert len(batch) == 3
    assert [r.source for r in rejects] == [f"{tiny_batch.labels[0]}/broken.png"]
    assert rejects[0].reason.startswith("cannot decode image")


def test_folder_without_label_subfolders_is_refused(tmp_path, tiny_batch):
    root = write_png_folder(tmp_path / "flat", tiny_batch.x[:2], tiny_batch.labels[:2])
    for png in list(root.rglob("*.png")):
        png.rename(root / f"{png.parent.name}_{png.name}")
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        folder.rmdir()
    assert "images lie directly in the folder with no labels" in refused(root)
    assert "LABELS.csv" in refused(root)


def test_header_claiming_huge_dimensions_is_refused_before_decoding(tmp_path, tiny_batch):
    root = write_png_folder(tmp_path / "bomb", tiny_batch.x[:2], np.array(["0", "0"]))
    (root / "0" / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (root / "0" / "big.png").write_bytes(png_claiming(5_000, 5_000))  # past ours, not PIL's

    start = time.perf_counter()
    batch, rejects = read(root)

    assert time.perf_counter() - start < 1.0
    assert len(batch) == 2
    reasons = {r.source: r.reason for r in rejects}
    assert set(reasons) == {"0/bomb.png", "0/big.png"}
    assert all("max_image_pixels" in r for r in reasons.values())
    assert "5000x5000" in reasons["0/big.png"]


def test_image_folder_symlink_outside_the_root_is_not_followed(tmp_path, tiny_batch):
    root = write_png_folder(tmp_path / "root", tiny_batch.x[:2], np.array(["0", "0"]))
    secret = write_png_folder(tmp_path / "outside", np.full((1, 1, 8, 8), 7, np.uint8), ["s"])
    (root / "0" / "link.png").symlink_to(secret / "s" / "00000.png")
    (root / "1").symlink_to(secret / "s", target_is_directory=True)
    (root / "0" / "inside.png").symlink_to(root / "0" / "00000.png")  # stays in: read

    batch, rejects = read(root)

    assert sorted(r.source for r in rejects) == ["0/link.png", "1"]
    assert all("symlink points outside the source" in r.reason for r in rejects)
    assert len(batch) == 3 and not (batch.x == 7).all(axis=(1, 2, 3)).any()


# --- IDX ------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, tiny_batch, gz):
    img_path, lab_path = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int), gz)

    for source in (tmp_path / "idx", img_path):  # the folder, or the images file itself
        batch = read_clean(source)
        np.testing.assert_array_equal(batch.x, tiny_batch.x)
        np.testing.assert_array_equal(batch.labels, tiny_batch.labels)
        assert batch.x.dtype == np.uint8 and batch.x.shape == (200, 1, 8, 8)
        assert batch.sources[3] == f"{img_path.name}[3]"
    pair, rejects = read_idx(img_path, lab_path, IngestConfig())
    np.testing.assert_array_equal(pair.x, tiny_batch.x)
    assert rejects == []


def test_idx_folder_with_train_and_test_pairs_reads_both(tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    write_idx_pair(tmp_path / "idx", tiny_batch.x[:150], labels[:150], gz=True)
    test_x, test_y = write_idx_pair(tmp_path / "t10k", tiny_batch.x[150:], labels[150:], gz=True)
    test_x.rename(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz")
    test_y.rename(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz")

    batch = read_clean(tmp_path / "idx", grayscale=False, image_size=[10, 10])

    assert batch.x.shape == (200, 3, 10, 10)  # the channel and size policy applies to IDX too
    assert sorted(batch.labels) == sorted(tiny_batch.labels)


@pytest.mark.parametrize("cut", ["raw", "gz_payload", "gz_stream"])
def test_truncated_idx_images_names_the_file_and_the_header_counts(tmp_path, tiny_batch, cut):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int),
                                 gz=cut != "raw")
    if cut == "gz_stream":  # a download cut short: the compressed file itself ends early
        raw = gzip.decompress(img_path.read_bytes())
        img_path.write_bytes(gzip.compress(raw, compresslevel=0)[:-108])  # stored; 8-byte trailer
    else:
        raw = gzip.decompress(img_path.read_bytes()) if cut != "raw" else img_path.read_bytes()
        img_path.write_bytes(gzip.compress(raw[:-100]) if cut != "raw" else raw[:-100])

    msg = refused(tmp_path / "idx")

    assert msg == (f"{img_path.name}: truncated IDX: header says 200 images of 8x8, "
                   f"found {200 * 64 - 100} bytes of pixels")


def test_truncated_idx_labels(tmp_path, tiny_batch):
    _, lab_path = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int))
    lab_path.write_bytes(lab_path.read_bytes()[:-10])
    assert refused(tmp_path / "idx") == (
        f"{LABELS}: truncated IDX: header says 200 labels, found 190 bytes of labels")


def test_idx_with_wrong_magic_is_refused(tmp_path, tiny_batch):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int))
    raw = bytearray(img_path.read_bytes())
    raw[2] = 0x0D  # float data, not unsigned bytes
    img_path.write_bytes(bytes(raw))

    msg = refused(tmp_path / "idx")
    assert IMAGES in msg and "magic 00000d03" in msg


def test_idx_label_and_image_counts_must_match(tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    write_idx_pair(tmp_path / "six", tiny_batch.x[:6], labels[:6])
    _, five_labels = write_idx_pair(tmp_path / "five", tiny_batch.x[:5], labels[:5])
    shutil.copy(five_labels, tmp_path / "six" / five_labels.name)

    assert refused(tmp_path / "six") == f"{LABELS}: 5 labels for 6 images in {IMAGES}"


def test_corrupt_gzip_stream_names_the_file(tmp_path, tiny_batch):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int), gz=True)
    raw = img_path.read_bytes()
    img_path.write_bytes(raw[:10] + bytes(b ^ 0xFF for b in raw[10:30]) + raw[30:])

    assert refused(tmp_path / "idx").startswith(f"{img_path.name}: corrupt gzip stream")


# --- NPZ ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nhw_uint8", "nhwc_unit_float", "nchw_rgb", "aliases_0_255_float"])
def test_npz_layouts(tmp_path, tiny_batch, layout):
    x, y = tiny_batch.x[:20], tiny_batch.labels[:20].astype(int)
    arrays, expected = {
        "nhw_uint8": ({"x": x[:, 0], "y": y}, x),
        "nhwc_unit_float": ({"x": x.transpose(0, 2, 3, 1) / 255.0, "y": y}, x),
        "nchw_rgb": ({"x": np.repeat(x, 3, axis=1), "y": y}, np.repeat(x, 3, axis=1)),
        "aliases_0_255_float": ({"images": x.astype(np.float32) + 0.2, "labels": y}, x),
    }[layout]
    np.savez(tmp_path / "data.npz", **arrays)

    batch = read_clean(tmp_path / "data.npz")

    np.testing.assert_array_equal(batch.x, expected)
    assert list(batch.labels) == [str(v) for v in y]
    assert batch.sources[:2] == ["data.npz[0]", "data.npz[1]"]


def test_npz_nan_inf_and_out_of_range_samples_are_rejected(tmp_path, tiny_batch):
    x = tiny_batch.x[:10, 0] / 255.0
    x[2, 0, 0], x[5, 3, 3], x[7, 1, 1] = np.nan, np.inf, -0.5
    np.savez(tmp_path / "dirty.npz", x=x, y=np.arange(10))

    batch, rejects = read(tmp_path / "dirty.npz")

    assert len(batch) == 7
    assert rejects[:2] == [Rejected("dirty.npz[2]", "NaN or inf pixel values"),
                           Rejected("dirty.npz[5]", "NaN or inf pixel values")]
    assert rejects[2].source == "dirty.npz[7]" and "outside 0..1" in rejects[2].reason


@pytest.mark.parametrize("arrays, problem", [
    ({"x": np.zeros((4, 8, 8), np.uint8)}, "expected arrays 'x'"),
    ({"x": np.zeros((4, 8, 8, 5), np.uint8), "y": np.zeros(4)}, "has shape (4, 8, 8, 5)"),
    ({"x": np.zeros((4, 64), np.uint8), "y": np.zeros(4)}, "has shape (4, 64)"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3)}, "expected (4,), one label per image"),
    ({"x": np.zeros((0, 8, 8), np.uint8), "y": np.zeros(0)}, "empty source"),
])
def test_npz_whole_file_problems_are_refused(tmp_path, arrays, problem):
    np.savez(tmp_path / "bad.npz", **arrays)
    msg = refused(tmp_path / "bad.npz")
    assert "bad.npz" in msg and problem in msg


class _RunsCode:
    """Unpickling this calls os.mkdir(target): proof that code ran."""

    target = ""

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_npz_object_array_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    _RunsCode.target = str(marker)
    np.savez(tmp_path / "evil.npz", x=np.array([_RunsCode()], dtype=object), y=np.array([0]))

    msg = refused(tmp_path / "evil.npz")

    assert "evil.npz" in msg and "Python objects" in msg
    assert not marker.exists()


# --- CSV ------------------------------------------------------------------------------

def write_csv(path: Path, x: np.ndarray, labels, header: bool = True, label_name="label") -> Path:
    flat = x.reshape(len(x), -1)
    lines = [",".join([label_name] + [f"pixel{i}" for i in range(flat.shape[1])])] if header else []
    lines += [",".join([str(lab)] + [str(v) for v in row]) for lab, row in zip(labels, flat, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


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


# --- whole-source problems ------------------------------------------------------------

def test_missing_path_is_refused(tmp_path):
    msg = refused(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg and "no such file or directory" in msg


@pytest.mark.parametrize("make", ["empty_folder", "header_only_csv", "empty_idx"])
def test_empty_source_is_refused(tmp_path, make):
    if make == "empty_folder":
        source = tmp_path / "empty"
        source.mkdir()
        (source / "7").mkdir()
    elif make == "header_only_csv":
        source = tmp_path / "empty.csv"
        source.write_text("label,pixel0,pixel1,pixel2,pixel3\n")
    else:
        write_idx_pair(tmp_path / "idx", np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0))
        source = tmp_path / "idx"
    msg = refused(source)
    assert str(source.name) in msg and ("empty source" in msg or "no images" in msg)


@pytest.mark.parametrize("folder", ["data", "models", "."])
def test_source_inside_the_workspace_data_or_models_is_refused(workspace, tiny_batch, folder):
    root = write_png_folder(workspace.root / folder / "incoming", tiny_batch.x[:2], tiny_batch.labels[:2])

    with pytest.raises(BadInputError) as err:
        read_source(str(root if folder != "." else workspace.root), IngestConfig(),
                    workspace=workspace.root)

    assert ("lies inside" if folder != "." else "contains") in str(err.value)
    assert "data/" in str(err.value) or "models/" in str(err.value)


def test_npz_needing_an_unsupported_zip_version_is_refused(tmp_path, tiny_batch):
    buf = io.BytesIO()
    np.savez(buf, x=tiny_batch.x[:3, 0], y=np.arange(3))
    data = bytearray(buf.getvalue())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    data[at + 6:at + 8] = b"@\x00"  # "version needed to extract": 6.4 (found by deep fuzzing)
    (tmp_path / "v.npz").write_bytes(bytes(data))
    assert refused(tmp_path / "v.npz").startswith("v.npz: not a readable .npz file")
