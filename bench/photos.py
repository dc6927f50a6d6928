"""Ingest of a folder of photos of mixed sizes and formats: Evergreen's reader (headers first,
regular files only, faithful modes, resize) against a bare Pillow loop, side by side."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.report import entry

GOAL = "<= 2.0"  # headers first means every file is opened twice: at most twice a bare loop


def write_photos(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n smooth RGB images, 20..120 px a side, as JPEG, PNG and PPM, in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = rng.integers(20, 121, 2)
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((int(w), int(h)), Image.Resampling.BICUBIC)
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        fmt, suffix = (("JPEG", "jpg"), ("PNG", "png"), ("PPM", "ppm"))[i % 3]
        path = folder / f"{i:05d}.{suffix}"
        img.save(path, format=fmt)
        paths.append(path)
    return paths


def plain_loop(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """What a hand-written script does: open, convert, resize, stack."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize(size[::-1],
                                                                     Image.Resampling.BILINEAR))
                     for p in paths])


def decode(quick: bool, scratch: Path) -> dict:
    from evergreen.config import IngestConfig
    from tasks.ingest import read_source

    n = 1_500 if quick else 6_000
    root = scratch / "photos"
    paths = write_photos(root, n)
    batch, _ = read_source(str(root), IngestConfig())  # warm-up: imports, page cache
    size = batch.x.shape[2:]
    ours, plain = [], []
    for _ in range(3):  # alternated, so load on the machine falls on both sides
        start = time.perf_counter()
        batch, rejects = read_source(str(root), IngestConfig())
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain_loop(paths, size)
        plain.append(time.perf_counter() - start)
    ratio = min(ours) / min(plain)
    return {"decode_vs_plain_pillow": entry(
        ratio, "ratio", f"{n} photos (JPEG/PNG/PPM, 20-120 px) in {min(ours):.2f} s "
        f"({n / min(ours):.0f} images/s) vs a bare Pillow loop {min(plain):.2f} s", GOAL,
        ratio <= 2.0, images=n, landed=len(batch), rejected=len(rejects),
        size=list(map(int, size)))}
