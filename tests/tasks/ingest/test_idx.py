"""IDX (MNIST layout): pairs, gzip, truncation and bad headers refused by name."""

import gzip
import shutil

import numpy as np
import pytest

from evergreen.config import IngestConfig
from tasks.ingest import read_idx
from tests.conftest import write_idx_pair
from tests.tasks.ingest.helpers import (
    IMAGES,
    LABELS,
    read_clean,
    refused,
)

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
