"""How batches sit on disk: shards in a shuffled stored order, a split index instead of pixel
copies, and workspaces from before shards migrated losslessly on their next run."""

import io

import numpy as np

from evergreen.config import Config
from evergreen.workspace import Workspace
from mains import call_main
from mains.processed import load_split, read_meta
from tasks.data import read_manifest
from tasks.ingest import content_hash, read_batches, read_metadata
from tasks.ingest.batches import read_metadata_file
from tests.mains.test_ingest import NO_DRIFT, ingest


def test_a_batch_lands_as_shards_in_a_shuffled_order_matching_its_table(workspace, tiny_idx,
                                                                      tiny_batch):
    cfg = NO_DRIFT.model_copy(deep=True)
    cfg.ingest.shard_mb = 1
    landed = call_main("ingest", Workspace(workspace.root), cfg, source=str(tiny_idx))
    folder = workspace.batches / landed["batch_id"]
    assert sum(s.count for s in read_manifest(folder)) == landed["added"]
    x, labels, meta = read_batches(workspace.batches)
    pixels = x[:]
    assert [content_hash(img) for img in pixels] == meta["content_hash"].tolist()
    by_hash = {content_hash(img): str(y) for img, y in zip(tiny_batch.x, tiny_batch.labels)}
    assert [by_hash[h] for h in meta["content_hash"]] == labels.tolist()
    assert meta["source"].tolist() != sorted(meta["source"])  # not the source's order


def test_preprocess_writes_an_index_not_pixels_and_the_splits_read_back(workspace, tiny_idx):
    ingest(tiny_idx, None, workspace.batches)
    ws = Workspace(workspace.root)
    call_main("preprocess", ws, Config())
    assert sorted(p.name for p in ws.processed.iterdir()) == ["index.npz", "meta.json"]
    assert (ws.processed / "index.npz").stat().st_size < 20_000
    x, labels, meta = read_batches(ws.batches)
    sizes = read_meta(ws)["split_sizes"]
    for name in ("train", "val", "test"):
        images, y = load_split(ws, name)
        assert len(images) == len(y) == sizes[name] and images[:].dtype == np.uint8
    everything = {content_hash(img) for img in x[:]}
    train = load_split(ws, "train")[0][:]
    assert {content_hash(img) for img in train} <= everything


def test_a_workspace_from_before_shards_migrates_on_its_next_run(workspace, tiny_idx):
    ingest(tiny_idx, None, workspace.batches)
    ws = Workspace(workspace.root)
    (table,) = ws.batches.glob("*.csv")
    x, labels, meta = read_batches(ws.batches)
    pixels = x[:]
    # the old layout: <id>.npz (x, labels) beside <id>.csv, rows in the source's order
    order = np.argsort(meta["source"].to_numpy())
    buf = io.BytesIO()
    np.savez_compressed(buf, x=pixels[order], labels=labels[order])
    (ws.batches / f"{table.stem}.npz").write_bytes(buf.getvalue())
    old_meta = meta.iloc[order].reset_index(drop=True)
    from tasks.ingest import metadata_csv

    table.write_bytes(metadata_csv(old_meta))
    import shutil

    shutil.rmtree(ws.batches / table.stem)

    call_main("preprocess", ws, Config())

    assert not list(ws.batches.glob("*.npz")) and (ws.batches / table.stem).is_dir()
    again, again_labels, again_meta = read_batches(ws.batches)
    moved = again[:]
    assert sorted(content_hash(i) for i in moved) == sorted(content_hash(i) for i in pixels)
    assert [content_hash(i) for i in moved] == again_meta["content_hash"].tolist()
    assert len(read_metadata(ws.batches)) == len(meta)


# --- a folder larger than memory: decoded into staged shards as it is read -------------------

def staged_cfg(max_batch_pixels: int):
    cfg = NO_DRIFT.model_copy(deep=True)
    cfg.ingest.max_batch_pixels = max_batch_pixels
    return cfg


def test_a_folder_past_the_memory_budget_lands_exactly_as_one_read_in_memory(tmp_path, tiny_batch):
    import shutil

    from tests.conftest import TINY_PARAMS, write_params, write_png_folder

    src = write_png_folder(tmp_path / "src", tiny_batch.x, tiny_batch.labels)
    first = next((src / tiny_batch.labels[0]).iterdir())
    shutil.copy(first, first.with_name("again.png"))  # a repeat: dedupe takes a view
    landed = {}
    for name, budget in (("memory", 10**9), ("staged", 64 * 30)):  # 30 of the 201 images
        root = tmp_path / name
        root.mkdir()
        write_params(root, TINY_PARAMS)
        ws = Workspace(root)
        landed[name] = call_main("ingest", ws, staged_cfg(budget), source=str(src))
        assert not (ws.batches.parent / ".staging").exists()  # staged pixels gone once landed
    memory, staged = landed["memory"], landed["staged"]
    assert any("decoded into shards on disk" in n for n in staged["notes"])
    assert not any("decoded into shards" in n for n in memory["notes"])
    assert staged["added"] == memory["added"] == 200 and staged["repeated_in_batch"] == 1
    assert staged["batch_id"] == memory["batch_id"]
    folders = [tmp_path / n / "data" / "batches" for n in ("memory", "staged")]
    assert read_manifest(folders[0] / memory["batch_id"]) == \
        read_manifest(folders[1] / staged["batch_id"])  # the same pixels, byte for byte
    tables = [(f / f"{memory['batch_id']}.csv").read_bytes() for f in folders]
    assert tables[0] == tables[1]


def test_a_staged_batch_that_fails_is_quarantined_whole_and_the_staging_cleared(tmp_path,
                                                                               tiny_batch):
    import pytest

    from evergreen.errors import BadInputError
    from tasks.data import ShardStore
    from tests.conftest import TINY_PARAMS, write_params, write_png_folder

    src = write_png_folder(tmp_path / "src", tiny_batch.x, tiny_batch.labels)
    (src / tiny_batch.labels[0] / "broken.png").write_bytes(b"nope")
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    ws = Workspace(root)
    with pytest.raises(BadInputError, match="broken.png: cannot decode"):
        call_main("ingest", ws, staged_cfg(64 * 30), source=str(src))
    assert not list(ws.batches.glob("*")) and not (ws.batches.parent / ".staging").exists()
    (held,) = ws.quarantine.iterdir()
    meta = read_metadata_file(held / "metadata.csv")
    pixels = ShardStore(held / "batch").get(np.arange(len(meta)))
    assert len(meta) == 200 and [content_hash(img) for img in pixels] == meta["content_hash"].tolist()
    assert all(p.stat().st_mode & 0o077 == 0 for p in [held / "batch", *(held / "batch").iterdir()])


def test_a_staged_folder_of_only_broken_files_is_refused_with_a_message(tmp_path):
    import pytest

    from evergreen.errors import BadInputError
    from tests.conftest import TINY_PARAMS, write_params

    src = tmp_path / "src" / "7"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # headers that lie
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    ws = Workspace(root)
    cfg = staged_cfg(1)  # every folder is staged
    cfg.ingest.image_size, cfg.ingest.channels = [8, 8], "gray"  # one pass: straight to the sink
    with pytest.raises(BadInputError, match="cannot decode"):
        call_main("ingest", ws, cfg, source=str(tmp_path / "src"))
    assert not (ws.batches.parent / ".staging").exists()
