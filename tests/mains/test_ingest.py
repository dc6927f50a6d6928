"""Ingest stage: dedupe and content-addressed batches (readers: tests/tasks/ingest/)."""

from types import SimpleNamespace

import numpy as np
import pytest

from evergreen.config import Config
from evergreen.errors import BadInputError, DataValidationError
from evergreen.workspace import Workspace
from mains import call_main
from tasks.ingest import content_hash, read_batches
from tests.conftest import tree_bytes, write_idx_pair, write_png_folder

# these tests land partial class sets on purpose: no drift checks here (see test_validate.py)
NO_DRIFT = Config.model_validate({"validate": {"min_label_shift_pvalue": 0.0, "new_classes": "allow",
                                               "max_pixel_psi": 1e9, "max_duplicate_rate": 1.0}})


def ingest(source, cfg, batches_dir):
    """The ingest path of the flow and the CLI, on a workspace holding `batches_dir`."""
    ws = Workspace(batches_dir.parent.parent)
    return SimpleNamespace(**call_main("ingest", ws, NO_DRIFT, source=str(source)))

IMAGES = "train-images-idx3-ubyte"


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- reading sources: see tests/tasks/ingest/ -----------------------------------

def test_nonexistent_source_is_bad_input(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BadInputError, match="nowhere"):
        ingest(str(missing), None, tmp_path / "data" / "batches")
    assert not (tmp_path / "data" / "batches").exists()


# --- landing batches ------------------------------------------------------------------

def test_ingest_twice_adds_nothing_the_second_time(workspace, tiny_idx, tiny_batch):
    first = ingest(str(tiny_idx), None, workspace.batches)
    files = listing(workspace.batches)
    second = ingest(str(tiny_idx), None, workspace.batches)

    assert first.batch_id is not None
    assert first.added + first.repeated_in_batch == len(tiny_batch)
    assert first.already_present == 0
    assert files == sorted([first.batch_id, f"{first.batch_id}.csv"])  # its shards, its table
    assert (second.batch_id, second.added, second.already_present) == (None, 0, len(tiny_batch))
    assert listing(workspace.batches) == files


def test_duplicates_inside_a_batch_are_landed_once(workspace, tmp_path, tiny_batch):
    x = np.concatenate([tiny_batch.x[:10], tiny_batch.x[:3]])
    labels = np.concatenate([tiny_batch.labels[:10], tiny_batch.labels[:3]]).astype(int)
    write_idx_pair(tmp_path / "dup", x, labels)

    result = ingest(str(tmp_path / "dup"), None, workspace.batches)

    assert (result.added, result.repeated_in_batch) == (10, 3)
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
        ids[name] = ingest(str(tmp_path / "src" / name), None,
                           tmp_path / "out" / name / "data" / "batches").batch_id

    assert ids["a"] == ids["same"] == ids["shuffled"]
    assert len({ids["a"], ids["fewer"], ids["relabelled"]}) == 3


def test_read_batches_round_trips_every_batch(workspace, tmp_path, tiny_batch):
    labels = tiny_batch.labels.astype(int)
    write_idx_pair(tmp_path / "one", tiny_batch.x[:120], labels[:120])
    write_idx_pair(tmp_path / "two", tiny_batch.x[100:], labels[100:])  # 20 already present
    first = ingest(str(tmp_path / "one"), None, workspace.batches)
    second = ingest(str(tmp_path / "two"), None, workspace.batches)

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
    result = ingest(str(tmp_path / "one"), None, workspace.batches)
    assert result.batch_id.isdigit() or "e" in result.batch_id  # the case under test

    got, labels, _ = read_batches(workspace.batches)
    np.testing.assert_array_equal(got[:], x)


def test_batch_of_another_shape_follows_the_dataset_or_is_refused(workspace, tmp_path, tiny_idx,
                                                                  tiny_batch):
    ingest(str(tiny_idx), None, workspace.batches)
    before = tree_bytes(workspace.batches)
    rgb = np.concatenate([tiny_batch.x[:4]] * 3, axis=1)
    big = np.repeat(np.repeat(rgb, 2, axis=2), 2, axis=3)  # 3x16x16
    root = write_png_folder(tmp_path / "rgb", big, tiny_batch.labels[:4])
    ws = Workspace(workspace.root)

    forced = NO_DRIFT.model_copy(deep=True)
    forced.ingest.channels, forced.ingest.image_size = "rgb", [16, 16]
    with pytest.raises(DataValidationError) as err:  # asked for 3x16x16: the shape gate refuses
        call_main("ingest", ws, forced, source=str(root))
    assert "3x16x16" in str(err.value) and "1x8x8" in str(err.value)
    assert tree_bytes(workspace.batches) == before

    landed = ingest(str(root), None, workspace.batches)  # auto: the dataset's 1x8x8, and said so
    assert landed.added == 4 and any("dataset's shape 1x8x8" in n for n in landed.notes)
    x, _, meta = read_batches(workspace.batches)
    assert x.shape[1:] == (1, 8, 8) and meta["decoded_as"].str.contains("RGB->L").sum() == 4


def test_metadata_rows_describe_each_sample(workspace, tiny_idx, tiny_batch):
    ingest(str(tiny_idx), None, workspace.batches)
    x, _, meta = read_batches(workspace.batches)
    assert (meta[["channels", "height", "width"]] == [1, 8, 8]).all().all()
    flat = x[:].reshape(len(x), -1)
    np.testing.assert_array_equal(meta["pixel_min"], flat.min(1))
    np.testing.assert_array_equal(meta["pixel_max"], flat.max(1))
    np.testing.assert_allclose(meta["pixel_mean"], flat.mean(1), atol=1e-3)
    assert meta["source"].str.startswith(IMAGES).all()



# --- bad samples: the policy in params, and the quarantine -----------------------------

def three_pngs_one_broken(tmp_path, tiny_batch):
    root = write_png_folder(tmp_path / "bad", tiny_batch.x[:3], tiny_batch.labels[:3])
    (root / tiny_batch.labels[0] / "broken.png").write_bytes(b"nope")
    return root


def test_bad_sample_rejects_the_batch_into_quarantine(workspace, tmp_path, tiny_batch):
    root = three_pngs_one_broken(tmp_path, tiny_batch)
    with pytest.raises(BadInputError, match=rf"{tiny_batch.labels[0]}/broken.png: cannot decode"):
        ingest(str(root), None, workspace.batches)
    assert not list(workspace.batches.glob("*"))
    (held,) = workspace.quarantine.iterdir()
    reasons = (held / "reasons.txt").read_text()
    assert "broken.png: cannot decode" in reasons and "on_bad_sample" in reasons
    assert (held / "batch" / "manifest.json").exists()  # the readable samples are kept too, not deleted


def test_bad_sample_dropped_and_listed_when_policy_says_drop(workspace, tmp_path, tiny_batch):
    root = three_pngs_one_broken(tmp_path, tiny_batch)
    cfg = NO_DRIFT.model_copy(deep=True)
    cfg.ingest.on_bad_sample = "drop"
    result = call_main("ingest", workspace, cfg, source=str(root))
    assert result["added"] == 3
    assert [d["source"] for d in result["dropped"]] == [f"{tiny_batch.labels[0]}/broken.png"]
    report = (workspace.reports / "ingest" / f"{result['batch_id']}.json").read_text()
    assert "broken.png" in report
    assert (workspace.reports / "ingest" / f"{result['batch_id']}.html").exists()


def test_unreadable_source_is_kept_in_quarantine(workspace, tmp_path):
    bad = tmp_path / "idx" / "train-images-idx3-ubyte"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") + (8).to_bytes(4, "big") * 2)
    (tmp_path / "idx" / "train-labels-idx1-ubyte").write_bytes(
        b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    with pytest.raises(BadInputError, match="truncated IDX: header says 100 images of 8x8"):
        ingest(str(bad.parent), None, workspace.batches)
    (held,) = workspace.quarantine.iterdir()
    assert (held / "files" / "train-images-idx3-ubyte").read_bytes() == bad.read_bytes()
    assert (held.stat().st_mode & 0o777) == 0o700
    assert ((held / "files" / "train-images-idx3-ubyte").stat().st_mode & 0o777) == 0o600
    assert "truncated IDX" in (held / "reasons.txt").read_text()
