"""`evergreen bench`: entries, isolation of failing groups, the generated data, the loops."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from app.cli import main
from bench import core
from bench.report import entry, not_run, table

NAMES = {"train_throughput_vs_plain_loop", "time_to_98_vs_reference", "pipeline_overhead",
         "noop_rerun", "peak_rss", "inference_batch1_p50", "inference_batch1_p95",
         "inference_batch256_throughput", "compression_latency_ratio", "compression_size_ratio",
         "compression_accuracy_drop", "ddp_2x1_vs_1x2", "warm_vs_scratch", "warm_old_test_drop",
         "ingest_throughput", "validate_70k", "gan_distance_ratio", "distillation_gain",
         "decode_vs_plain_pillow", "gtsrb_official_accuracy", "gtsrb_run_minutes", "gtsrb_time_to_97",
         "gtsrb_compression_speedup", "gtsrb_compression_size_ratio", "gtsrb_compression_drop",
         "stream_vs_memory_digits", "stream_vs_memory_gtsrb64", "serving_batched_vs_naive_32",
         "serving_saturation_vs_offline", "serving_reload_failures", "serving_bad_requests_not_4xx"}


def test_the_gtsrb_group_is_skipped_with_a_note_without_the_data(tmp_path, monkeypatch):
    from bench.gtsrb import gtsrb

    monkeypatch.setenv("EVERGREEN_GTSRB", str(tmp_path / "nowhere"))
    rows = gtsrb(False, tmp_path)
    assert len(rows) == 6 and all("EVERGREEN_GTSRB" in r["skipped"] for r in rows.values())


def test_every_benchmark_belongs_to_one_group():
    names = [n for _, group, _ in core.GROUPS.values() for n in group]
    assert sorted(names) == sorted(NAMES)


def test_entry_rounds_and_table_shows_why_a_row_did_not_run():
    row = entry(1.234567, "ratio", "plain 10 images/s", ">= 1.5", False, threads=2)
    assert row == {"value": 1.2346, "unit": "ratio", "anchor": "plain 10 images/s",
                   "goal": ">= 1.5", "pass": False, "details": {"threads": 2}}
    assert entry(float("nan"), "s", None, None, None)["value"] is None
    text = table({"a": row, "b": not_run("<= 5", "boom\nKeyError: 'x'", "s", error=True),
                  "c": not_run(None, "not in --quick")})
    assert "NO" in text and "error: KeyError: 'x'" in text and "not in --quick" in text


def test_a_failing_group_becomes_error_entries(tmp_path, monkeypatch):
    monkeypatch.setitem(core.GROUPS, "broken", ("bench.report:no_such_benchmark", ("x", "y"), (60, 60)))
    rows = core.run_group("broken", True, tmp_path, tmp_path)
    assert set(rows) == {"x", "y"}
    assert all("no_such_benchmark" in r["error"] and r["pass"] is None for r in rows.values())


def test_compression_ratios_from_the_report(tmp_path):
    from bench.collected import compression

    report = {"selected": "small", "reason": "fits", "variants": [
        {"name": "teacher", "method": "none", "accuracy": 0.99, "latency_ms_p50": 0.3, "size_bytes": 4000},
        {"name": "small", "method": "pruning", "accuracy": 0.985, "latency_ms_p50": 0.1, "size_bytes": 500}]}
    path = tmp_path / "pipeline_ws" / "reports" / "compression.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(report))
    rows = compression(True, tmp_path)
    assert rows["compression_latency_ratio"]["value"] == pytest.approx(3.0)
    assert rows["compression_size_ratio"]["value"] == pytest.approx(8.0)
    assert rows["compression_accuracy_drop"]["value"] == pytest.approx(0.5)
    assert all(r["pass"] for r in rows.values())


def test_mnist_like_set_is_28x28_idx_with_test_digits_unseen(tmp_path):
    from bench.data import digits_sources, mnist_like, write_idx
    from evergreen.config import IngestConfig
    from tasks.ingest import read_idx

    (x, y), (xt, yt) = mnist_like(60, 20)
    assert x.shape == (60, 1, 28, 28) and xt.shape == (20, 1, 28, 28) and x.dtype == np.uint8
    assert set(y) <= set(range(10)) and x.max() > 200 and x[:, :, :2].mean() < 10  # MNIST-like dark margin
    src = digits_sources()
    train_keys = {img.tobytes() for img in src["train"][0]}
    assert not any(img.tobytes() in train_keys for img in src["test"][0])
    batch, rejected = read_idx(*write_idx(tmp_path, x, y), IngestConfig())
    assert not rejected and np.array_equal(batch.x, x) and list(batch.labels) == [str(v) for v in y]


def test_a_user_mnist_folder_is_read_whole_or_its_first_n(tmp_path):
    from bench.data import idx_set, mnist_like, write_idx

    (x, y), (xt, yt) = mnist_like(40, 12)
    write_idx(tmp_path, x, y, prefix="train")
    write_idx(tmp_path, xt, yt, prefix="t10k")
    (a, b), (c, d) = idx_set(tmp_path)
    assert np.array_equal(a, x) and np.array_equal(b, y) and b.dtype == np.int64
    assert np.array_equal(c, xt) and np.array_equal(d, yt)
    (a, _), (c, _) = idx_set(tmp_path, 10, 5)
    assert len(a) == 10 and len(c) == 5


def test_cli_bench_mnist_folder_without_the_test_files_exits_2_naming_one(tmp_path, capsys):
    from bench.data import mnist_like, write_idx

    (x, y), _ = mnist_like(10, 2)
    write_idx(tmp_path / "mnist", x, y, prefix="train")  # no t10k- files
    rc = main(["--workspace", str(tmp_path / "ws"), "bench", "--mnist", str(tmp_path / "mnist"),
               "--only", "compression"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte[.gz]: missing" in err and "bench --mnist" in err
    assert not (tmp_path / "ws" / "reports" / "bench.json").exists()


def test_plain_loop_learns_and_reports_each_epoch(data):
    from bench.training import plain_fit
    from nets import build_model
    from tasks.train.augment import Augment

    train, val, classes, norm = data
    torch.manual_seed(0)
    model = build_model("seed_cnn", tuple(train[0].shape[1:]), len(classes))
    seen = []
    seconds = plain_fit(model, train, val, norm, 3, 16, torch.optim.Adam(model.parameters(), 3e-3),
                        Augment(), on_epoch=lambda e, acc, t: seen.append((e, acc, t)))
    assert [e for e, _, _ in seen] == [1, 2, 3] and seconds >= seen[-1][2] > 0
    assert seen[-1][1] > 0.5  # 10 classes: well above chance after 3 epochs


def test_cli_bench_json_prints_only_json_and_writes_the_report(tmp_path, capsys):
    rc = main(["--workspace", str(tmp_path), "bench", "--quick", "--json", "--only", "compression",
               "--only", "gan"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["benchmarks"]) == {"compression_latency_ratio", "compression_size_ratio",
                                         "compression_accuracy_drop", "gan_distance_ratio"}
    assert report["machine"]["cores"] >= 1 and report["quick"] is True
    assert json.loads((tmp_path / "reports" / "bench.json").read_text()) == report


def test_cli_bench_unknown_group_is_bad_input(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path), "bench", "--only", "nope"]) == 2
    assert "unknown group(s) nope" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quick_smoke(tmp_path):
    """CI's smoke run: every benchmark reported (measured, skipped with a reason, or an error
    entry), valid JSON on stdout; no goals asserted, they are for BENCHMARKS.md."""
    proc = subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(tmp_path), "bench",
                           "--quick", "--json"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    rows = report["benchmarks"]
    assert set(rows) == NAMES
    for name, row in rows.items():
        assert {"value", "unit", "anchor", "goal", "pass"} <= set(row), name
    errors = {n: r["error"] for n, r in rows.items() if "error" in r}
    assert not errors, errors
    assert rows["train_throughput_vs_plain_loop"]["value"] > 0
    assert rows["pipeline_overhead"]["value"] < 1 and rows["peak_rss"]["value"] > 50


def test_shard_format_comparison_round_trips_npy_shards(tmp_path, monkeypatch):
    """bench/shard_formats: several shards, every sample read in order, random reads exact."""
    import numpy as np

    from bench import shard_formats

    monkeypatch.setattr(shard_formats, "SHARD_BYTES", 10 * 3 * 4 * 4)  # 10 images per shard
    x = np.random.default_rng(0).integers(0, 256, (45, 3, 4, 4), dtype=np.uint8)
    y = np.arange(45) % 7
    row = shard_formats.measure("npy shards (mmap)", x, y, tmp_path)
    assert row["samples"] == 45 and row["files"] == 2 * 5 + 1  # 5 shards of x and y, manifest
    maps, bounds = shard_formats.npy_open(tmp_path / "npy")
    idx = np.array([0, 9, 10, 44])
    got = [maps[int(np.searchsorted(bounds, i, side="right") - 1)][0][i - bounds[
        int(np.searchsorted(bounds, i, side="right") - 1)]] for i in idx]
    assert np.array_equal(np.stack(got), x[idx])
