"""A labels CSV for a folder of images: file name -> label (and an optional ROI).

Covers GTSRB's `Filename;...;ClassId` (';'-separated, ROI columns Roi.X1 .. Roi.Y2) and
Kaggle's `id,label`; the delimiter and the columns are found from the header.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from evergreen.errors import BadInputError
from tasks.ingest.names import display_name
from tasks.ingest.reading import MAX_LABEL, Rejected
from tasks.ingest.safe_files import text_lines

FILE_COLUMNS = ("filename", "file_name", "file", "fname", "image", "image_name", "image_id",
                "imageid", "img", "path", "filepath", "name", "id")
LABEL_COLUMNS = ("label", "labels", "classid", "class_id", "class", "category", "target", "y")
ROI_COLUMNS = ("x1", "y1", "x2", "y2")
DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class Columns:
    """Where the file name, the label and the ROI (X1, Y1, X2, Y2) are in each row."""

    file: int
    label: int
    roi: tuple[int, int, int, int] | None
    size: tuple[int, int] | None = None  # Width, Height: the size the ROI was measured on


@dataclass(frozen=True)
class Entry:
    label: str
    roi: tuple[int, int, int, int] | None  # a crop box (left, top, right, bottom), exclusive
    line: int
    size: tuple[int, int] | None = None  # (width, height) the ROI refers to, when listed

    def roi_for(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The ROI on an image of this size: scaled when the file was resized since the CSV was
        written (the CSV's Width/Height differ), then clipped to the image."""
        if self.roi is None:
            return None
        sx, sy = (width / self.size[0], height / self.size[1]) if self.size else (1.0, 1.0)
        x1, y1, x2, y2 = self.roi
        return (max(0, round(x1 * sx)), max(0, round(y1 * sy)), min(width, round(x2 * sx)),
                min(height, round(y2 * sy)))


def _key(name: str) -> str:
    return name.strip().replace("\\", "/").removeprefix("./").lower()


def columns_of(header: list[str], label_column: str, want_roi: bool) -> Columns | None:
    """The columns of a labels CSV, or None when the header has no file or no label column."""
    cells = [c.strip() for c in header]
    lower = [c.lower() for c in cells]
    file = next((lower.index(n) for n in FILE_COLUMNS if n in lower), None)
    if label_column in cells:
        label = cells.index(label_column)
    else:
        label = next((lower.index(n) for n in LABEL_COLUMNS if n in lower), None)
    if label is None and len(cells) == 2 and file is not None:
        label = 1 - file
    if file is None or label is None or file == label:
        return None
    bare = [c.removeprefix("roi.").removeprefix("roi_") for c in lower]
    roi = tuple(bare.index(n) for n in ROI_COLUMNS) if all(n in bare for n in ROI_COLUMNS) else None
    size = (lower.index("width"), lower.index("height")) if {"width", "height"} <= set(lower) else None
    return Columns(file, label, roi if want_roi else None, size if want_roi else None)


def _delimiter(first: str) -> str:
    return max(DELIMITERS, key=first.count)


def header_columns(fh: IO[bytes], label_column: str, max_line_bytes: int,
                   shown: str) -> Columns | None:
    """Whether this file's first line is a labels header (for finding the labels CSV)."""
    first = next(text_lines(fh, max_line_bytes, shown), "")
    header = next(csv.reader([first], delimiter=_delimiter(first)), [])
    return columns_of(header, label_column, want_roi=False)


def read_labels(fh: IO[bytes], shown: str, label_column: str, crop_roi: bool,
                max_line_bytes: int) -> tuple[dict[str, Entry], list[Rejected]]:
    """name (lower case, '/'-separated) -> Entry, and the rows refused (by line)."""
    lines = text_lines(fh, max_line_bytes, shown)
    first = next(lines, None)
    if first is None:
        raise BadInputError(f"{shown}: empty labels CSV")
    reader = csv.reader(itertools.chain([first], lines), delimiter=_delimiter(first))
    try:
        cols = columns_of(next(reader), label_column, crop_roi)
        if cols is None:
            raise BadInputError(f"{shown}: not a labels CSV: the header needs a file-name column "
                                f"({', '.join(FILE_COLUMNS[:4])}, id, ...) and a label column "
                                f"({', '.join(LABEL_COLUMNS[:5])}, ...; or ingest.csv_label_column)")
        if crop_roi and cols.roi is None:
            raise BadInputError(f"{shown}: ingest.crop_roi is set but the header has no "
                                "X1, Y1, X2, Y2 (or Roi.X1 ...) columns")
        return _entries(reader, cols, shown)
    except csv.Error as exc:
        raise BadInputError(f"{shown}: line {reader.line_num}: malformed CSV: {exc}") from None


def _entries(reader, cols: Columns, shown: str) -> tuple[dict[str, Entry], list[Rejected]]:
    entries, rejects = {}, []
    width = max(cols.file, cols.label, *(cols.roi or ())) + 1
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        problem = _row_problem(cells, cols, width)
        name = _key(cells[cols.file]) if len(cells) > cols.file else ""
        if problem is None and name in entries and entries[name].label != cells[cols.label].strip():
            problem = f"file listed again (line {entries[name].line}) with another label"
        if problem:
            rejects.append(Rejected(f"{shown}:{line}", f"line {line}: {problem}"))
            continue
        roi = size = None
        if cols.roi:
            x1, y1, x2, y2 = (int(cells[i]) for i in cols.roi)
            roi = (x1, y1, x2 + 1, y2 + 1)  # X2/Y2 are inclusive (GTSRB)
            listed = [cells[i].strip() for i in cols.size] if cols.size else []
            size = (int(listed[0]), int(listed[1])) if listed and all(
                v.isascii() and v.isdigit() and int(v) > 0 for v in listed) else None
        entries[name] = Entry(display_name(cells[cols.label].strip()), roi, line, size)
    return entries, rejects


def _row_problem(cells: list[str], cols: Columns, width: int) -> str | None:
    if len(cells) < width:
        return f"{len(cells)} columns, expected at least {width}"
    if not cells[cols.file].strip():
        return "missing file name"
    label = cells[cols.label].strip()
    if not label:
        return "missing label"
    if len(label) > MAX_LABEL:
        return f"label longer than {MAX_LABEL} characters"
    if cols.roi:
        values = [cells[i].strip() for i in cols.roi]
        if not all(v.isascii() and v.isdigit() for v in values):
            return "ROI columns X1, Y1, X2, Y2 are not whole numbers"
        x1, y1, x2, y2 = map(int, values)
        if x2 < x1 or y2 < y1:
            return "ROI has X2 < X1 or Y2 < Y1"
    return None


def lookup(entries: dict[str, Entry], rel: str, csv_rel: str) -> Entry | None:
    """The entry of an image: by its path from the images folder or from the CSV's folder,
    then by its name, then by its name without the suffix (Kaggle ids)."""
    path = PurePosixPath(rel)
    for key in (rel, csv_rel, path.name, path.stem):
        entry = entries.get(key.lower())
        if entry is not None:
            return entry
    return None


def csv_relative(image_rel: str, images_root: Path, csv_dir: Path) -> str:
    """The image's path as seen from the CSV's folder (the CSV may sit one folder up)."""
    if csv_dir == images_root:
        return image_rel
    try:
        return (images_root.relative_to(csv_dir) / image_rel).as_posix()
    except ValueError:
        return image_rel
