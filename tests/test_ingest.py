"""Ingest stage: readers for each source kind, dedupe, content-addressed batches."""

import gzip
import shutil

import numpy as np
import pytest

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest import (
    content_hash,
    ingest,
    load_digits_batch,
    read_batches,
    read_source,
)
from tests.conftest import write_idx_pair, write_png_folder

IMAGES = "train-images-idx3-ubyte"


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def index_of(source: str) -> int:
    """write_png_folder names files by the sample's index: '<label>/.../00042.png' -> 42."""
    return int(source.rsplit("/", 1)[-1].split(".")[0])


@pytest.fixture
def tiny_idx(tmp_path, tiny_batch):
    folder = tmp_path / "idx"
    write_idx_pair(folder, tiny_batch.x, tiny_batch.labels.astype(int))
    return folder


# --- digits ---------------------------------------------------------------------------

def test_digits_batch_is_uint8_nchw_with_ten_string_labels(digits):
    assert digits.x.shape == (1797, 1, 8, 8)
    assert digits.x.dtype == np.uint8
    assert digits.x.min() == 0 and digits.x.max() == 255
    assert sorted(set(digits.labels)) == [str(c) for c in range(10)]
    assert len(digits.sources) == len(digits) == 1797


def test_read_source_digits_is_the_bundled_set(digits):
    again = read_source("digits", IngestConfig())
    np.testing.assert_array_equal(again.x, digits.x)
    np.testing.assert_array_equal(again.labels, load_digits_batch().labels)


# --- image folders --------------------------------------------------------------------

def test_grayscale_png_folder_with_nested_subfolders(tmp_path, tiny_batch):
    from PIL import Image

    x, labels = tiny_batch.x[:30], tiny_batch.labels[:30]
    root = write_png_folder(tmp_path / "imgs", x[:20], labels[:20])
    # root/<label>/deeper/more/*.png: the label is still the top folder
    for i in range(20, 30):
        folder = root / labels[i] / "deeper" / "more"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0]).save(folder / f"{i:05d}.png")

    batch = read_source(str(root), IngestConfig())

    assert batch.x.shape == (30, 1, 8, 8) and batch.x.dtype == np.uint8
    for img, label, source in zip(batch.x, batch.labels, batch.sources, strict=False):
        i = index_of(source)
        assert label == labels[i]
        np.testing.assert_array_equal(img, x[i])  # PNG is lossless
    assert sum("deeper" in s for s in batch.sources) == 10


def test_rgb_png_folder_reads_three_channels(tmp_path, tiny_batch):
    gray = tiny_batch.x[:12]
    rgb = np.concatenate([gray, 255 - gray, gray // 2], axis=1)  # (12, 3, 8, 8)
    root = write_png_folder(tmp_path / "rgb", rgb, tiny_batch.labels[:12])

    batch = read_source(str(root), IngestConfig())

    assert batch.x.shape == (12, 3, 8, 8)
    for img, source in zip(batch.x, batch.sources, strict=False):
        np.testing.assert_array_equal(img, rgb[index_of(source)])


def test_mixed_gray_and_rgb_become_rgb_unless_grayscale_forced(tmp_path, tiny_batch):
    gray = tiny_batch.x[:4]
    root = write_png_folder(tmp_path / "mix", gray[:2], np.array(["a", "a"]))
    rgb = np.concatenate([gray[2:]] * 3, axis=1)
    write_png_folder(tmp_path / "tmp", rgb, np.array(["b", "b"]))
    shutil.move(tmp_path / "tmp" / "b", root / "b")

    mixed = read_source(str(root), IngestConfig())
    forced = read_source(str(root), IngestConfig(grayscale=True))

    assert mixed.x.shape == (4, 3, 8, 8)
    a = mixed.x[mixed.labels == "a"]
    np.testing.assert_array_equal(a[:, 0], a[:, 1])  # gray replicated across channels
    assert forced.x.shape == (4, 1, 8, 8)
    assert list(forced.labels) == ["a", "a", "b", "b"]


def test_mismatched_image_sizes_name_the_file_and_the_setting(tmp_path, tiny_batch):
    from PIL import Image

    root = write_png_folder(tmp_path / "sizes", tiny_batch.x[:3], np.array(["0"] * 3))
    (root / "1").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "1" / "odd.png")

    with pytest.raises(BadInputError) as err:
        read_source(str(root), IngestConfig())
    assert "odd.png" in str(err.value)
    assert "ingest.image_size" in str(err.value)

    resized = read_source(str(root), IngestConfig(image_size=[12, 10]))
    assert resized.x.shape == (4, 1, 12, 10)  # [H, W]


@pytest.mark.parametrize("grayscale", [None, True])
@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_png_names_the_file(tmp_path, tiny_batch, grayscale, content):
    root = write_png_folder(tmp_path / "bad", tiny_batch.x[:3], tiny_batch.labels[:3])
    good = (root / tiny_batch.labels[0] / "00000.png").read_bytes()
    data = b"this is not a PNG" if content == "garbage" else good[: len(good) // 2]
    (root / tiny_batch.labels[0] / "broken.png").write_bytes(data)

    with pytest.raises(BadInputError, match="broken.png"):
        read_source(str(root), IngestConfig(grayscale=grayscale))


def test_folder_without_label_subfolders_is_refused(tmp_path, tiny_batch):
    root = write_png_folder(tmp_path / "flat", tiny_batch.x[:2], tiny_batch.labels[:2])
    for png in list(root.rglob("*.png")):
        png.rename(root / f"{png.parent.name}_{png.name}")
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(BadInputError, match="no images"):
        read_source(str(root), IngestConfig())


# --- IDX ------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, tiny_batch, gz):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int), gz)

    for source in (tmp_path / "idx", img_path):  # the folder, or the images file itself
        batch = read_source(str(source), IngestConfig())
        np.testing.assert_array_equal(batch.x, tiny_batch.x)
        np.testing.assert_array_equal(batch.labels, tiny_batch.labels)
        assert batch.x.dtype == np.uint8 and batch.x.shape == (200, 1, 8, 8)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file_and_the_header_counts(tmp_path, tiny_batch, gz):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int), gz)
    raw = gzip.decompress(img_path.read_bytes()) if gz else img_path.read_bytes()
    cut = raw[:-100]
    img_path.write_bytes(gzip.compress(cut) if gz else cut)

    with pytest.raises(BadInputError) as err:
        read_source(str(tmp_path / "idx"), IngestConfig())
    msg = str(err.value)
    assert img_path.name in msg
    assert "truncated IDX" in msg
    assert "200 items" in msg and "8x8" in msg
    assert str(200 * 64) in msg and str(200 * 64 - 100) in msg


def test_idx_with_wrong_magic_is_rejected(tmp_path, tiny_batch):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int))
    raw = bytearray(img_path.read_bytes())
    raw[2] = 0x0D  # float data, not unsigned bytes
    img_path.write_bytes(bytes(raw))

    with pytest.raises(BadInputError, match="magic"):
        read_source(str(tmp_path / "idx"), IngestConfig())


def test_idx_label_and_image_counts_must_match(tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    write_idx_pair(tmp_path / "six", tiny_batch.x[:6], labels[:6])
    _, five_labels = write_idx_pair(tmp_path / "five", tiny_batch.x[:5], labels[:5])
    shutil.copy(five_labels, tmp_path / "six" / five_labels.name)

    with pytest.raises(BadInputError, match="5 labels for 6 images"):
        read_source(str(tmp_path / "six"), IngestConfig())


def test_corrupt_gzip_stream_is_bad_input(tmp_path, tiny_batch):
    img_path, _ = write_idx_pair(tmp_path / "idx", tiny_batch.x, tiny_batch.labels.astype(int),
                                 gz=True)
    raw = img_path.read_bytes()
    img_path.write_bytes(raw[:10] + bytes(b ^ 0xFF for b in raw[10:30]) + raw[30:])

    with pytest.raises(BadInputError, match=img_path.name):
        read_source(str(tmp_path / "idx"), IngestConfig())


def test_nonexistent_source_is_bad_input(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BadInputError, match="nowhere"):
        ingest(str(missing), IngestConfig(), tmp_path / "batches")
    assert not (tmp_path / "batches").exists()


# --- landing batches ------------------------------------------------------------------

def test_ingest_twice_adds_nothing_the_second_time(workspace, tiny_idx, tiny_batch):
    first = ingest(str(tiny_idx), IngestConfig(), workspace.batches)
    files = listing(workspace.batches)
    second = ingest(str(tiny_idx), IngestConfig(), workspace.batches)

    assert first.batch_id is not None
    assert first.added + first.duplicates_in_batch == len(tiny_batch)
    assert first.already_present == 0
    assert files == sorted([f"{first.batch_id}.npz", f"{first.batch_id}.csv"])
    assert (second.batch_id, second.added, second.already_present) == (None, 0, len(tiny_batch))
    assert listing(workspace.batches) == files


def test_duplicates_inside_a_batch_are_landed_once(workspace, tmp_path, tiny_batch):
    x = np.concatenate([tiny_batch.x[:10], tiny_batch.x[:3]])
    labels = np.concatenate([tiny_batch.labels[:10], tiny_batch.labels[:3]]).astype(int)
    write_idx_pair(tmp_path / "dup", x, labels)

    result = ingest(str(tmp_path / "dup"), IngestConfig(), workspace.batches)

    assert (result.added, result.duplicates_in_batch) == (10, 3)
    _, _, meta = read_batches(workspace.batches)
    assert meta["content_hash"].is_unique


def test_batch_id_is_content_addressed(tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    perm = np.random.default_rng(0).permutation(len(tiny_batch))
    relabelled = labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 10
    sources = {
        "a": (tiny_batch.x, labels),
        "same": (tiny_batch.x, labels),
        "shuffled": (tiny_batch.x[perm], labels[perm]),
        "fewer": (tiny_batch.x[1:], labels[1:]),
        "relabelled": (tiny_batch.x, relabelled),
    }
    ids = {}
    for name, (x, y) in sources.items():
        write_idx_pair(tmp_path / "src" / name, x, y)
        ids[name] = ingest(str(tmp_path / "src" / name), IngestConfig(),
                           tmp_path / "out" / name).batch_id

    assert ids["a"] == ids["same"] == ids["shuffled"]
    assert len({ids["a"], ids["fewer"], ids["relabelled"]}) == 3


def test_read_batches_round_trips_every_batch(workspace, tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    write_idx_pair(tmp_path / "one", tiny_batch.x[:120], labels[:120])
    write_idx_pair(tmp_path / "two", tiny_batch.x[100:], labels[100:])  # 20 already present
    first = ingest(str(tmp_path / "one"), IngestConfig(), workspace.batches)
    second = ingest(str(tmp_path / "two"), IngestConfig(), workspace.batches)

    x, y, meta = read_batches(workspace.batches)

    assert (second.added, second.already_present) == (80, 20)
    assert x.shape == (200, 1, 8, 8) and x.dtype == np.uint8
    assert sorted(content_hash(img) for img in x) == sorted(
        content_hash(img) for img in tiny_batch.x)
    assert list(meta["content_hash"]) == [content_hash(img) for img in x]
    assert list(meta["label"]) == list(y)
    assert set(meta["batch_id"]) == {first.batch_id, second.batch_id}
    by_hash = {content_hash(img): label for img, label in zip(tiny_batch.x, tiny_batch.labels, strict=False)}
    assert all(by_hash[content_hash(img)] == label for img, label in zip(x, y, strict=False))


def test_read_batches_of_an_empty_dataset_is_bad_input(workspace):
    with pytest.raises(BadInputError, match="ingest"):
        read_batches(workspace.batches)


@pytest.mark.parametrize("k", [1082, 1195])  # ids '0090540229937365' and '626348e292034359'
def test_numeric_looking_batch_id_round_trips(workspace, tmp_path, k):
    x = np.zeros((1, 1, 8, 8), np.uint8)
    x.flat[:4] = np.frombuffer(k.to_bytes(4, "little"), np.uint8)
    write_idx_pair(tmp_path / "one", x, np.array([0]))
    result = ingest(str(tmp_path / "one"), IngestConfig(), workspace.batches)
    assert result.batch_id.isdigit() or "e" in result.batch_id  # the case under test

    got, labels, _ = read_batches(workspace.batches)
    np.testing.assert_array_equal(got, x)


def test_batch_of_another_shape_is_refused_and_nothing_written(workspace, tmp_path, tiny_idx,
                                                               tiny_batch):
    ingest(str(tiny_idx), IngestConfig(), workspace.batches)
    before = {p.name: p.read_bytes() for p in workspace.batches.iterdir()}
    rgb = np.concatenate([tiny_batch.x[:4]] * 3, axis=1)
    root = write_png_folder(tmp_path / "rgb", rgb, tiny_batch.labels[:4])

    with pytest.raises(BadInputError) as err:
        ingest(str(root), IngestConfig(), workspace.batches)

    assert "(3, 8, 8)" in str(err.value) and "(1, 8, 8)" in str(err.value)
    assert {p.name: p.read_bytes() for p in workspace.batches.iterdir()} == before


def test_metadata_rows_describe_each_sample(workspace, tiny_idx, tiny_batch):
    ingest(str(tiny_idx), IngestConfig(), workspace.batches)
    x, _, meta = read_batches(workspace.batches)
    assert (meta[["channels", "height", "width"]] == [1, 8, 8]).all().all()
    flat = x.reshape(len(x), -1)
    np.testing.assert_array_equal(meta["pixel_min"], flat.min(1))
    np.testing.assert_array_equal(meta["pixel_max"], flat.max(1))
    np.testing.assert_allclose(meta["pixel_mean"], flat.mean(1), atol=1e-3)
    assert meta["source"].str.startswith(IMAGES).all()

