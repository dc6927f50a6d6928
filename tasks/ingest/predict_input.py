"""Images to score with the champion: files and folders, read by the ingest decoder with its
limits (formats, pixel budgets, regular files only, a deadline per file)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evergreen.config import IngestConfig
from tasks.ingest.decode import DecodeError, Target, decode, probe
from tasks.ingest.folder import walk
from tasks.ingest.names import Names, display_name
from tasks.ingest.reading import Reading, ReadLog
from tasks.ingest.safe_files import SourceFiles, UnreadableFile, kind_of


@dataclass(frozen=True)
class Input:
    """One image file to score: where, how to open it, how it is shown."""

    path: Path
    files: SourceFiles
    shown: str


def collect_inputs(paths: list[str], cfg: IngestConfig) -> tuple[list[Input], list[str]]:
    """The image files named or held (in sub-folders too) by `paths`, and one error line for
    each path that is not there or not a regular file or folder."""
    inputs, errors = [], []
    for text in paths:
        path, shown = Path(text).expanduser(), display_name(text)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            errors.append(f"{shown}: {exc.strerror or 'cannot read'}")
            continue
        if stat.S_ISDIR(mode):
            reading = Reading(cfg, SourceFiles(path, cfg.read_timeout_s), Names(path, f"{shown}/"),
                              ReadLog())
            images, _, refused = walk(path, reading)
            inputs += [Input(p, reading.files, reading.names(p)) for p in images]
            errors += [f"{r.source}: {r.reason}" for r in refused]
        elif stat.S_ISREG(mode):
            inputs.append(Input(path, SourceFiles(Path(os.path.realpath(path)).parent,
                                                  cfg.read_timeout_s), shown))
        else:
            errors.append(f"{shown}: not a regular file or folder ({kind_of(mode)}); refused")
    return inputs, errors


def load_inputs(inputs: list[Input], in_shape: list[int], cfg: IngestConfig,
                chunk: int = 256) -> Iterator[tuple[list[Input], np.ndarray, list[str]]]:
    """(inputs decoded, uint8 (N, C, H, W) in the model's shape, error lines), `chunk` at a time.

    Each image is decoded alone, within ingest.max_image_pixels, straight to the model's size.
    """
    c, h, w = in_shape
    background = (cfg.alpha_background[0], cfg.alpha_background[1], cfg.alpha_background[2])
    target = Target(c, (h, w), cfg.resize, background)
    for start in range(0, len(inputs), chunk):
        ok, arrays, errors = [], [], []
        for item in inputs[start:start + chunk]:
            try:
                with item.files.open(item.path, item.shown) as fh:
                    header = probe(fh, cfg.max_image_pixels)
                with item.files.open(item.path, item.shown) as fh:
                    arr, _ = decode(fh, header, target)
            except UnreadableFile as exc:
                errors.append(str(exc))
                continue
            except DecodeError as exc:
                errors.append(f"{item.shown}: {exc}")
                continue
            ok.append(item)
            arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        x = np.stack(arrays) if arrays else np.zeros((0, c, h, w), np.uint8)
        yield ok, x, errors
