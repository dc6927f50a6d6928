"""Shard formats side by side for issue 19: `python -m bench.shard_formats IMAGES.npz OUT_DIR`.

Writes the same uint8 images (N, C, H, W) and int labels as ~64 MB shards in each format, then
reads them back: every sample in order (images/s of the format itself, one process, no
DataLoader workers), 2,000 samples at random (what content-hash splits and replay need), disk
size and file count. Memory-mapped .npy shards always run; WebDataset, LitData and MosaicML
Streaming run where installed (they are not project dependencies: LitData and Streaming need
torchvision and pull another torch build, see BENCHMARKS.md).
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHARD_BYTES = 64 << 20
RANDOM_READS = 2000


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def disk(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def per_shard(x: np.ndarray) -> int:
    return max(1, SHARD_BYTES // x[0].nbytes)


# --- memory-mapped .npy shards with a manifest ------------------------------------------

def npy_write(x, y, out: Path) -> None:
    out.mkdir(parents=True)
    step, shards = per_shard(x), []
    for i, start in enumerate(range(0, len(x), step)):
        np.save(out / f"{i:05d}.x.npy", x[start:start + step])
        np.save(out / f"{i:05d}.y.npy", y[start:start + step])
        shards.append({"name": f"{i:05d}", "count": int(min(step, len(x) - start))})
    (out / "manifest.json").write_text(json.dumps({"shards": shards}))


def npy_open(out: Path) -> tuple[list, np.ndarray]:
    shards = json.loads((out / "manifest.json").read_text())["shards"]
    maps = [(np.load(out / f"{s['name']}.x.npy", mmap_mode="r"),
             np.load(out / f"{s['name']}.y.npy", mmap_mode="r")) for s in shards]
    return maps, np.cumsum([0] + [s["count"] for s in shards])


def npy_sequential(out: Path, batch: int = 256) -> int:
    maps, _ = npy_open(out)
    seen = 0
    for xs, ys in maps:
        for start in range(0, len(xs), batch):
            block = np.ascontiguousarray(xs[start:start + batch])  # what a batch costs to copy
            seen += len(block) + 0 * int(ys[start])
    return seen


def npy_random(out: Path, idx: np.ndarray) -> int:
    maps, bounds = npy_open(out)
    total = 0
    for i in idx:
        s = int(np.searchsorted(bounds, i, side="right") - 1)
        total += int(np.asarray(maps[s][0][i - bounds[s]])[0, 0, 0])
    return total


# --- WebDataset: tar shards, sequential only --------------------------------------------

def wds_write(x, y, out: Path) -> None:
    import webdataset as wds

    out.mkdir(parents=True)
    with wds.ShardWriter(str(out / "%05d.tar"), maxsize=SHARD_BYTES, verbose=0) as sink:
        for i in range(len(x)):
            buf = io.BytesIO()
            np.save(buf, x[i])
            sink.write({"__key__": f"{i:08d}", "x.npy": buf.getvalue(), "cls": str(int(y[i]))})


def wds_sequential(out: Path) -> int:
    import webdataset as wds

    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        seen += np.load(io.BytesIO(sample["x.npy"])).shape[0] > 0
    return seen


# --- LitData ------------------------------------------------------------------------------

_ARRAYS: dict[str, np.ndarray] = {}


def _lit_sample(i: int, source: str) -> dict:
    """One sample for LitData's workers (spawned: they map the arrays from disk themselves)."""
    if source not in _ARRAYS:
        _ARRAYS[source] = np.load(source + ".x.npy", mmap_mode="r")
        _ARRAYS[source + "y"] = np.load(source + ".y.npy", mmap_mode="r")
    return {"x": np.array(_ARRAYS[source][i]), "y": int(_ARRAYS[source + "y"][i])}


def lit_write(x, y, out: Path) -> None:
    import functools

    import litdata

    source = str(out) + "-source"
    np.save(source + ".x.npy", x)
    np.save(source + ".y.npy", y)
    litdata.optimize(fn=functools.partial(_lit_sample, source=source), inputs=list(range(len(x))),
                     output_dir=str(out), chunk_bytes="64MB", num_workers=2, mode="overwrite")


def lit_sequential(out: Path) -> int:
    from litdata import StreamingDataset

    return sum(1 for s in StreamingDataset(str(out)) if s["x"].shape[0] > 0)


def lit_random(out: Path, idx: np.ndarray) -> int:
    from litdata import StreamingDataset

    ds = StreamingDataset(str(out))
    return sum(int(ds[int(i)]["x"][0, 0, 0]) for i in idx)


# --- MosaicML Streaming (MDS) ---------------------------------------------------------------

def mds_write(x, y, out: Path) -> None:
    from streaming import MDSWriter

    with MDSWriter(out=str(out), columns={"x": "ndarray:uint8", "y": "int"},
                   size_limit=SHARD_BYTES) as sink:
        for i in range(len(x)):
            sink.write({"x": x[i], "y": int(y[i])})


def mds_dataset(out: Path):
    from streaming import StreamingDataset

    return StreamingDataset(local=str(out), shuffle=False, batch_size=256)


def mds_sequential(out: Path) -> int:
    return sum(1 for s in mds_dataset(out) if s["x"].shape[0] > 0)


def mds_random(out: Path, idx: np.ndarray) -> int:
    ds = mds_dataset(out)
    return sum(int(ds[int(i)]["x"][0, 0, 0]) for i in idx)


FORMATS = {
    "npy shards (mmap)": ("numpy", npy_write, npy_sequential, npy_random),
    "WebDataset (tar)": ("webdataset", wds_write, wds_sequential, None),
    "LitData": ("litdata", lit_write, lit_sequential, lit_random),
    "MosaicML Streaming (MDS)": ("streaming", mds_write, mds_sequential, mds_random),
}


def measure(name: str, x, y, out: Path) -> dict:
    import importlib.util

    module, write, sequential, random = FORMATS[name]
    if importlib.util.find_spec(module) is None:
        return {"format": name, "skipped": f"{module} not installed"}
    folder = out / name.split()[0].lower()
    shutil.rmtree(folder, ignore_errors=True)
    _, write_s = timed(lambda: write(x, y, folder))
    seen, read_s = timed(lambda: sequential(folder))
    idx = np.random.default_rng(0).integers(0, len(x), RANDOM_READS)
    row = {"format": name, "samples": int(seen), "write_images_per_s": round(len(x) / write_s),
           "read_images_per_s": round(len(x) / read_s)}
    if random is not None:
        _, rand_s = timed(lambda: random(folder, idx))
        row["random_us_per_sample"] = round(1e6 * rand_s / RANDOM_READS, 1)
    row["bytes"], row["files"] = disk(folder)
    return row


def main(argv: list[str]) -> int:
    with np.load(argv[0]) as data:
        x, y = data["x"], data["y"]
    out = Path(argv[1])
    rows = [measure(name, x, y, out) for name in (argv[2:] or FORMATS)]
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
