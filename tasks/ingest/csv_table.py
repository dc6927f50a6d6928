"""Pixel tables: a CSV of label + H*H gray pixel columns (Kaggle's MNIST layout), header
optional; a bad row is refused by line, a malformed file as a whole."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np

from evergreen.errors import BadInputError
from tasks.ingest.names import display_name
from tasks.ingest.reading import MAX_LABEL, Batch, Read, Reading, Rejected
from tasks.ingest.safe_files import text_lines
from tasks.ingest.shape import conform


def read_csv_table(path: Path, reading: Reading) -> Read:
    """label + H*H pixel columns (Kaggle MNIST layout), header optional; bad rows refused."""
    shown = reading.names(path)
    with reading.files.open(path, shown) as fh:
        reader = csv.reader(text_lines(fh, reading.cfg.max_csv_line_bytes, shown))
        try:
            return _parse_csv(reader, reading, shown)
        except csv.Error as exc:
            raise BadInputError(f"{shown}: line {reader.line_num}: malformed CSV: {exc}") from None


def _parse_csv(reader, reading: Reading, shown: str) -> Read:  # reader: a csv.reader
    """The rows after the header: pixels held once as bytes, bad rows refused by line."""
    first = next((r for r in reader if r), None)
    if first is None:
        raise BadInputError(f"{shown}: empty CSV: no rows")
    header, at = _csv_layout(first, reading.cfg.csv_label_column, shown)
    side, width = _csv_side(len(first), shown), len(first)
    if side * side > reading.cfg.max_image_pixels:
        raise BadInputError(f"{shown}: rows hold images of {side}x{side} pixels "
                            f"(> ingest.max_image_pixels {reading.cfg.max_image_pixels})")
    columns = [c for i, c in enumerate(header or []) if i != at] or [str(i + 1) for i in range(1, width)]
    pixels, labels, sources, rejects = bytearray(), [], [], []  # rows held once, as bytes
    for cells in reader if header else itertools.chain([first], reader):
        if not cells:
            continue
        line = reader.line_num
        if len(cells) != width:
            raise BadInputError(f"{shown}: line {line} has {len(cells)} columns, expected "
                                f"{width} like the {'header' if header else 'first row'}")
        reading.budget((len(labels) + 1) * side * side,
                       f"more than {len(labels)} rows of {side}x{side}", shown)
        label, cells = cells[at].strip(), cells[:at] + cells[at + 1:]
        parsed = (_parse_pixels(cells, columns) if label and len(label) <= MAX_LABEL
                  else "missing label" if not label else f"label longer than {MAX_LABEL} characters")
        if isinstance(parsed, str):
            rejects.append(Rejected(f"{shown}:{line}", f"line {line}: {parsed}"))
        else:
            pixels += parsed.tobytes()
            labels.append(display_name(label))
            sources.append(f"{shown}:{line}")
    x = np.frombuffer(pixels, np.uint8).reshape(-1, 1, side, side)
    return conform(Batch(x, np.array(labels, dtype=str), sources), reading, "CSV 0..255"), rejects


def _csv_layout(first: list[str], label_column: str, shown: str) -> tuple[list[str] | None, int]:
    """(header or None, index of the label column); without a header the label comes first."""
    cells = [c.strip() for c in first]
    if label_column in cells:
        return cells, cells.index(label_column)
    if sum(map(_is_number, cells[1:])) > len(cells[1:]) / 2:
        return None, 0
    raise BadInputError(f"{shown}: the header has no {display_name(label_column)!r} column; "
                        "set ingest.csv_label_column")


def _csv_side(width: int, shown: str) -> int:
    """The image side H from a row width of 1 label + H*H gray pixels."""
    side = math.isqrt(max(width - 1, 0))
    if width < 2 or side * side != width - 1:
        raise BadInputError(f"{shown}: {width} columns = 1 label + {width - 1} pixels, and "
                            f"{width - 1} is not a square H*H (grayscale; e.g. 784 = 28x28)")
    return side


def _parse_pixels(cells: list[str], columns: list[str]) -> np.ndarray | str:
    """A row's pixels as uint8, or why they are refused."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        return _csv_problem(cells, columns) or "unreadable pixel values"
    if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 255).all()
            and (values == np.round(values)).all()):
        return _csv_problem(cells, columns) or "unreadable pixel values"
    return values.astype(np.uint8)


def _csv_problem(cells: list[str], columns: list[str]) -> str | None:
    """Why a row's pixel cells are not integers in 0..255 (the first bad cell), or None."""
    for cell, column in zip(cells, columns, strict=True):
        text = cell.strip()
        shown = display_name(column)
        if not text:
            return f"missing pixel value in column {shown}"
        if not _is_number(text) or not math.isfinite(float(text)):
            return f"non-numeric pixel value in column {shown}"
        value = float(text)
        if not 0 <= value <= 255 or value != int(value):
            return f"pixel value in column {shown} is not an integer in 0..255"
    return None


def _is_number(text: str) -> bool:
    """Whether the text parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True
