"""How names are shown and stored: control and undecodable characters escaped, paths relative
to the source, text cells safe in a spreadsheet."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "'")  # spreadsheets run cells starting so


def display_name(text: str) -> str:
    """A name as shown and stored: control, format and undecodable characters escaped.

    A newline cannot forge a line in a record, and a name that was not valid UTF-8 on disk
    (surrogate-escaped by Python) becomes `\\xNN` for each raw byte; other characters that are
    escaped are `\\xNN` below 0x80 (same byte in UTF-8) and `\\uNNNN` above. Backslashes are
    doubled, so the display form maps back to exactly one name on disk.
    """
    if text.isprintable() and "\\" not in text:  # the common case, at C speed
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a raw byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"):
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code <= 0xFFFF
                       else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(text: str) -> str:
    """A text cell safe in a spreadsheet: a leading = + - @ (or ') gets a ' in front."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def from_csv_cell(text: str) -> str:
    """Undo `csv_cell`: exactly one leading ' is removed."""
    return text[1:] if text.startswith("'") else text


@dataclass(frozen=True)
class Names:
    """How paths are shown to the user: relative to `base`, behind `prefix` ('a.zip:'),
    with control and undecodable characters escaped (display_name)."""

    base: Path
    prefix: str = ""

    def __call__(self, path: Path) -> str:
        rel = relative(path, self.base)
        return display_name(self.prefix + rel if rel else self.prefix.rstrip(":") or str(path))


def relative(path: Path, base: Path) -> str:
    """path relative to base, '/'-separated, '' for base itself (string slicing: pathlib is slow);
    the whole path when it lies elsewhere (a name is shown, never an error raised)."""
    text, start = str(path), str(base).rstrip(os.sep) + os.sep
    if text.startswith(start):
        rel = text[len(start):]
    elif text == str(base):
        rel = ""
    else:
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = text
    return "" if rel == "." else rel.replace(os.sep, "/")
