"""What the reader tests share: read a source, expect a refusal, make PNG bytes."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest import read_source

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"  # MNIST's IDX names


def read(source, **cfg):
    return read_source(str(source), IngestConfig(**cfg))


def read_clean(source, **cfg):
    batch, rejects = read(source, **cfg)
    assert rejects == []
    return batch


def refused(source, **cfg) -> str:
    """The BadInputError message for a whole-source problem (exit code 2)."""
    with pytest.raises(BadInputError) as err:
        read(source, **cfg)
    assert err.value.exit_code == 2
    return str(err.value)


def index_of(source: str) -> int:
    """write_png_folder names files by the sample's index: '<label>/.../00042.png' -> 42."""
    return int(source.rsplit("/", 1)[-1].split(".")[0])


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height pixels (valid CRCs) over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def write_csv(path: Path, x: np.ndarray, labels, header: bool = True, label_name="label") -> Path:
    flat = x.reshape(len(x), -1)
    lines = [",".join([label_name] + [f"pixel{i}" for i in range(flat.shape[1])])] if header else []
    lines += [",".join([str(lab)] + [str(v) for v in row]) for lab, row in zip(labels, flat, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path
