"""What the hostile-input tests share: planted secrets, PNG builders, and the checks every
refusal passes (exit 2, one line naming the file, nothing changed, nothing private copied)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from app.cli import main
from evergreen import dvcfile

SECRET = "EVERGREEN-PRIVATE-e1f0c3"  # planted in files a reader must never quote or copy
DEADLINE_S = 60


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int, data: bytes = b"\0" * 64, compressed: bool = False) -> bytes:
    """A PNG whose header claims width x height 8-bit gray pixels over `data` (valid CRCs)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = data if compressed else zlib.compress(data)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_images(folder: Path, digits, n: int = 4, label: str = "0") -> None:
    (folder / label).mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(digits.labels == label)[:n]:
        (folder / label / f"g{i}.png").write_bytes(png_bytes(digits.x[i, 0]))


# --- the checks every refusal passes ----------------------------------------------------

def tree(root: Path) -> set[str]:
    """Every path under root, relative (walked without recursion: a case holds a deep tree)."""
    found, stack = set(), [str(root)] if root.exists() else []
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                found.add(os.path.relpath(entry.path, root))
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return found


def state(ws) -> tuple:
    """What must not change: the batches, the DVC hash of the data, the registry."""
    batches = {str(p.relative_to(ws.batches)): p.read_bytes() for p in ws.batches.rglob("*")
               if p.is_file()}
    return batches, dvcfile.data_version(ws.root), ws.registry.read_bytes()


def assert_nothing_private_in(ws) -> None:
    for path in ws.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
    for path in ws.quarantine.rglob("*") if ws.quarantine.exists() else []:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"  # files and folders


def refuse(ws, capsys, args: list[str], names: str, code: int = 2) -> str:
    """Run `evergreen ARGS`; assert the refusal and everything it must leave alone."""
    outside = ws.root.parent
    before, around = state(ws), tree(outside) - tree(ws.root) - {"ws"}
    rc = main(["--workspace", str(ws.root), *args])
    out, err = capsys.readouterr()
    assert rc == code, err
    assert names in err, err
    assert "Traceback" not in err and SECRET not in err + out
    assert state(ws) == before
    assert {p for p in tree(outside) if not p.startswith("ws")} == {
        p for p in around if not p.startswith("ws")}
    assert_nothing_private_in(ws)
    for path in ws.quarantine.rglob("reasons.txt") if ws.quarantine.exists() else []:
        assert SECRET not in path.read_text()
    return err
