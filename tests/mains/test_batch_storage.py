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
