"""The bundled digits and image folders: every layout read right, bad files refused by name."""

import shutil
import time

import numpy as np
import pytest

from evergreen.config import IngestConfig
from tasks.ingest import ReadLog, load_digits_batch, read_source
from tests.conftest import write_png_folder
from tests.tasks.ingest.helpers import index_of, png_claiming, read, read_clean, refused

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


@pytest.mark.parametrize("fixed", [{}, {"channels": "gray", "image_size": [8, 8]}])
def test_worker_processes_decode_a_large_folder_as_this_process_does(tmp_path, tiny_batch,
                                                                     monkeypatch, fixed):
    """Two passes (headers, then pixels) with auto shapes; one when params fix the shape."""
    import tasks.ingest.pool as pool

    x, labels = tiny_batch.x[:60], tiny_batch.labels[:60]
    root = write_png_folder(tmp_path / "imgs", x, labels)
    broken = sorted(root.rglob("*.png"))[7]
    broken.write_bytes(broken.read_bytes()[:30])  # truncated: refused by name, in either path
    here, here_bad = read(str(root), **fixed)
    monkeypatch.setattr(pool, "POOL_MIN", 10)
    monkeypatch.setattr(pool, "CHUNK", 16)
    monkeypatch.setattr(pool, "workers", lambda: 2)
    log = ReadLog()
    pooled, pooled_bad = read_source(str(root), IngestConfig(**fixed), log=log)
    np.testing.assert_array_equal(pooled.x, here.x)
    assert pooled.labels.tolist() == here.labels.tolist() and len(pooled) == 59
    assert [(r.source, r.reason) for r in pooled_bad] == [(r.source, r.reason) for r in here_bad]
    assert len(pooled_bad) == 1 and pooled_bad[0].source.endswith(broken.name)
    assert len({o.path for o in log.opened}) == 60  # the workers' reads are on the record
