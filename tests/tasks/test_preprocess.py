"""Preprocess stage: hash-based splits, dedupe, train-only normalization."""

import numpy as np
import pytest

from evergreen.config import PreprocessConfig
from evergreen.errors import BadInputError
from tasks.ingest import Batch, content_hash, metadata_table
from tasks.preprocess import SPLITS, preprocess, sort_classes, split_of


def run(batch: Batch, cfg: PreprocessConfig | None = None):
    """preprocess() on a batch, with metadata built the way ingest builds it."""
    meta = metadata_table(batch, [content_hash(img) for img in batch.x], "b0")
    return preprocess(batch.x, batch.labels, meta, cfg or PreprocessConfig())


def split_by_hash(processed) -> dict[str, str]:
    """content hash -> split, recovered from the split pixels."""
    out = {}
    for name, (x, _) in processed.splits.items():
        for img in x:
            h = content_hash(img)
            assert h not in out, f"{h} is in both {out[h]} and {name}"
            out[h] = name
    return out


def test_split_is_a_pure_function_of_the_hash(digits):
    old = run(digits.take(np.arange(len(digits)) < 900))
    new = run(digits)  # 897 more samples land

    old_splits, new_splits = split_by_hash(old), split_by_hash(new)
    assert old_splits and set(old_splits) <= set(new_splits)
    assert all(new_splits[h] == s for h, s in old_splits.items())
    cfg = PreprocessConfig()
    assert all(split_of(h, cfg.split_salt, cfg.val_fraction, cfg.test_fraction) == s
               for h, s in new_splits.items())


def test_split_depends_on_the_salt(tiny_batch):
    a = split_by_hash(run(tiny_batch))
    b = split_by_hash(run(tiny_batch, PreprocessConfig(split_salt="other")))
    assert a.keys() == b.keys() and a != b


def test_duplicates_are_kept_once(tiny_batch):
    twice = np.r_[np.arange(len(tiny_batch)), [0, 0, 5]]
    batch = Batch(tiny_batch.x[twice], tiny_batch.labels[twice],
                  [tiny_batch.sources[i] for i in twice])

    processed = run(batch)

    assert processed.info["samples"] == len(tiny_batch)
    assert processed.info["repeats_dropped"] == 3
    hashes = [content_hash(img) for x, _ in processed.splits.values() for img in x]
    assert len(hashes) == len(set(hashes)) == len(tiny_batch)


def test_conflicting_labels_drop_the_sample(tiny_batch):
    victim = content_hash(tiny_batch.x[0])
    other = "9" if tiny_batch.labels[0] != "9" else "8"
    batch = Batch(np.concatenate([tiny_batch.x, tiny_batch.x[:1]]),
                  np.concatenate([tiny_batch.labels, [other]]),
                  tiny_batch.sources + ["elsewhere.png"])

    processed = run(batch)

    assert processed.info["label_conflicts_dropped"] == 1
    assert processed.info["samples"] == len(tiny_batch) - 1
    assert victim not in split_by_hash(processed)


def test_per_class_split_fractions_follow_the_config(digits):
    """Hash splits are not stratified: each class's share is binomial noise around the
    configured fraction (one salt can put 28% of a class in test), so average over salts."""
    meta = metadata_table(digits, [content_hash(img) for img in digits.x], "b0")
    shares, val_shares = [], []
    for salt in ("a", "b", "c", "d", "e"):
        cfg = PreprocessConfig(val_fraction=0.1, test_fraction=0.2, split_salt=salt)
        processed = preprocess(digits.x, digits.labels, meta, cfg)
        counts = {s: np.bincount(y, minlength=10) for s, (_, y) in processed.splits.items()}
        total = sum(counts.values())
        shares.append(counts["test"] / total)
        val_shares.append(counts["val"].sum() / total.sum())
        assert sum(processed.info["split_sizes"].values()) == processed.info["samples"]

    test_share = np.mean(shares, axis=0)  # per class
    assert np.all(np.abs(test_share - 0.2) <= 0.08), test_share
    assert abs(np.mean(val_shares) - 0.1) <= 0.03


def test_normalization_comes_from_the_train_split_only(tiny_batch):
    cfg = PreprocessConfig()
    meta = metadata_table(tiny_batch, [content_hash(img) for img in tiny_batch.x], "b0")
    where = np.array([split_of(h, cfg.split_salt, cfg.val_fraction, cfg.test_fraction)
                      for h in meta["content_hash"]])
    base = preprocess(tiny_batch.x, tiny_batch.labels, meta, cfg)

    # Same hashes (so same splits), different pixels outside train: stats must not move.
    x = tiny_batch.x.copy()
    x[where != "train"] = 255
    held_out_changed = preprocess(x, tiny_batch.labels, meta, cfg)
    x = tiny_batch.x.copy()
    x[where == "train"] = 255
    train_changed = preprocess(x, tiny_batch.labels, meta, cfg)

    assert (held_out_changed.mean, held_out_changed.std) == (base.mean, base.std)
    assert train_changed.mean != base.mean
    train_px = base.splits["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(base.mean, [train_px.mean()], atol=1e-6)
    np.testing.assert_allclose(base.std, [train_px.std()], atol=1e-6)


def test_per_channel_stats_for_rgb(tiny_batch):
    rgb = np.concatenate([tiny_batch.x, np.zeros_like(tiny_batch.x),
                          np.full_like(tiny_batch.x, 255)], axis=1)
    processed = run(Batch(rgb, tiny_batch.labels, tiny_batch.sources))

    assert processed.in_shape == (3, 8, 8)
    assert len(processed.mean) == len(processed.std) == 3
    assert processed.mean[1] == 0.0 and processed.mean[2] == 1.0
    assert all(s > 0 for s in processed.std)  # floored, so dividing is safe


def test_empty_split_is_bad_input(tiny_batch):
    with pytest.raises(BadInputError, match="val split is empty"):
        run(tiny_batch, PreprocessConfig(val_fraction=0.0))
    with pytest.raises(BadInputError, match="split is empty"):
        run(tiny_batch.take(np.arange(len(tiny_batch)) < 2))


def test_labels_become_class_indices(tiny_batch):
    processed = run(tiny_batch)
    assert processed.classes == [str(c) for c in range(10)]
    for name in SPLITS:
        x, y = processed.splits[name]
        assert x.dtype == np.uint8 and y.dtype == np.int64 and len(x) == len(y) > 0
    by_hash = {content_hash(img): label for img, label in zip(tiny_batch.x, tiny_batch.labels, strict=False)}
    x, y = processed.splits["train"]
    assert all(processed.classes[c] == by_hash[content_hash(img)] for img, c in zip(x, y, strict=False))


@pytest.mark.parametrize("labels, expected", [
    (["10", "2", "1", "2"], ["1", "2", "10"]),
    ([3, 11, -1], ["-1", "3", "11"]),
    (["b", "a", "10", "2"], ["10", "2", "a", "b"]),  # not all numeric: plain string order
    (["cat", "dog"], ["cat", "dog"]),
])
def test_sort_classes(labels, expected):
    assert sort_classes(labels) == expected


def tracks(n_classes=4, tracks_per_class=30, frames=4, name="{track:05d}_{frame:05d}.ppm", seed=0):
    """A batch like GTSRB's: near-identical frames of each track, named <track>_<frame>."""
    rng = np.random.default_rng(seed)
    x, labels, sources = [], [], []
    for c in range(n_classes):
        for t in range(tracks_per_class):
            base = rng.integers(0, 256, (3, 8, 8))
            for f in range(frames):
                x.append(np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8))
                labels.append(str(c))
                sources.append(f"{c:05d}/" + name.format(track=c * 100 + t, frame=f))
    return Batch(np.stack(x), np.array(labels), sources)


def split_of_sources(processed, batch) -> dict[str, str]:
    by_hash = split_by_hash(processed)
    return {s: by_hash[content_hash(img)] for s, img in zip(batch.sources, batch.x, strict=True)}


def test_frames_of_one_track_never_straddle_the_split():
    batch = tracks()
    processed = run(batch)
    where = split_of_sources(processed, batch)
    by_track = {}
    for source, split in where.items():
        by_track.setdefault(source.rsplit("_", 1)[0], set()).add(split)
    assert len(by_track) == 120 and all(len(s) == 1 for s in by_track.values())
    assert processed.info["groups"]["groups"] == 120
    assert processed.info["groups"]["grouped_batches"] == ["b0"]
    # sample by sample, frames of a track do land on both sides
    off = split_of_sources(run(batch, PreprocessConfig(group_split="off")), batch)
    assert any(len({off[s] for s in where if s.startswith(t)}) > 1 for t in by_track)


@pytest.mark.parametrize("name", ["IMG_{frame:04d}{track:03d}.jpg",  # one camera prefix
                                  "{track:03d}{frame:02d}.png"])  # plain numbers
def test_names_without_groups_split_sample_by_sample(name):
    batch = tracks(name=name)
    processed = run(batch)
    assert processed.info["groups"]["grouped_batches"] == []
    assert split_of_sources(processed, batch) == split_of_sources(
        run(batch, PreprocessConfig(group_split="off")), batch)


def test_a_new_batch_never_moves_a_grouped_sample():
    import pandas as pd

    from tasks.ingest import metadata_table as table

    first, second = tracks(seed=0), tracks(seed=1, name="{track:05d}_{frame:05d}_b.ppm")
    meta1 = table(first, [content_hash(i) for i in first.x], "b1")
    both = pd.concat([meta1, table(second, [content_hash(i) for i in second.x], "b2")],
                     ignore_index=True)
    alone = preprocess(first.x, first.labels, meta1, PreprocessConfig())
    together = preprocess(np.concatenate([first.x, second.x]),
                          np.concatenate([first.labels, second.labels]), both, PreprocessConfig())
    before, after = split_by_hash(alone), split_by_hash(together)
    assert all(after[h] == s for h, s in before.items())


def test_a_group_pattern_must_name_its_group():
    from pydantic import ValidationError

    from evergreen.errors import ConfigError  # noqa: F401 (the CLI's wrapper of this error)

    with pytest.raises(ValidationError, match="named group"):
        PreprocessConfig(group_pattern=r"^(\d+)_")
    batch = tracks()
    custom = run(batch, PreprocessConfig(group_pattern=r"^(?P<group>\d{5})"))
    assert custom.info["groups"]["groups"] == 120
