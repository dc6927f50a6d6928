"""Fuzzing the readers (issue 9): random and mutated IDX, CSV, NPZ and archive inputs either
read into a well-formed batch or raise BadInputError (the documented error, exit code 2);
nothing else escapes, and nothing is written outside the readers' private temp folder,
which is emptied again.
"""

import contextlib
import gzip
import io
import os
import shutil
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evergreen.config import IngestConfig
from evergreen.errors import BadInputError
from tasks.ingest import read_idx, read_source

# small caps keep hostile sizes cheap; the caps themselves are what a bomb runs into
CFG = IngestConfig(max_archive_bytes=200_000, max_archive_members=40, max_image_pixels=4096)
# CI replays the same 60 cases per test; EVERGREEN_FUZZ_EXAMPLES=5000 explores new ones
DEEP = int(os.environ.get("EVERGREEN_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=DEEP or 60, deadline=None, derandomize=not DEEP,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OUTSIDE = Path(tempfile.gettempdir()) / "evergreen-fuzz-outside"  # archives aim members here


@contextlib.contextmanager
def sandbox(files: dict[str, bytes]):
    """A folder holding only `files` (under src/) and the readers' temp folder (tmp/)."""
    root = Path(tempfile.mkdtemp(prefix="evergreen-fuzz-"))
    (root / "src").mkdir()
    (root / "tmp").mkdir()
    for name, data in files.items():
        (root / "src" / name).write_bytes(data)
    before, tempfile.tempdir = tempfile.tempdir, str(root / "tmp")
    try:
        yield root / "src"
        assert list((root / "tmp").iterdir()) == [], "the private temp folder was not emptied"
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        assert found == sorted(["src", "tmp", *(f"src/{n}" for n in files)]), found
        assert not OUTSIDE.exists(), f"something was written to {OUTSIDE}"
    finally:
        tempfile.tempdir = before
        shutil.rmtree(root, ignore_errors=True)


def check_read(read) -> None:
    """`read()` returns a well-formed (Batch, rejects) or raises BadInputError; nothing else."""
    try:
        batch, rejects = read()
    except BadInputError as exc:
        assert str(exc).strip()
        return
    assert batch.x.dtype == np.uint8 and batch.x.ndim == 4 and batch.x.shape[1] in (1, 3)
    assert len(batch.x) == len(batch.labels) == len(batch.sources)
    assert len(batch.x) > 0 or rejects  # an empty batch says why each file was refused
    assert all(r.reason for r in rejects)


def read_file(name: str, data: bytes) -> None:
    with sandbox({name: data}) as src:
        check_read(lambda: read_source(str(src / name), CFG, workspace=src.parent / "ws"))


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """A valid file with a few bytes changed, a cut, or junk appended."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    data = data[:cut] if cut is not None else data
    return bytes(data) + draw(st.binary(max_size=8))


# --- IDX -----------------------------------------------------------------------------------

def idx(x: np.ndarray) -> bytes:
    return struct.pack(">4B", 0, 0, 8, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape) + x.tobytes()


GOOD_IMAGES = idx(np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4))
GOOD_LABELS = idx(np.array([0, 1, 2], np.uint8))


def read_pair(images: bytes, labels: bytes) -> None:
    names = {"train-images-idx3-ubyte": images, "train-labels-idx1-ubyte": labels}
    with sandbox(names) as src:
        check_read(lambda: read_idx(src / "train-images-idx3-ubyte", src / "train-labels-idx1-ubyte",
                                    CFG))
        check_read(lambda: read_source(str(src), CFG))  # the folder holding the pair


@FUZZ
@given(images=st.one_of(st.binary(max_size=120), mutated(GOOD_IMAGES)),
       labels=st.one_of(st.just(GOOD_LABELS), mutated(GOOD_LABELS)), gz=st.booleans())
@example(images=GOOD_IMAGES, labels=GOOD_LABELS, gz=True)
@example(images=b"", labels=b"\0\0\x08", gz=False)  # found: a magic cut before its rank byte
def test_fuzz_idx_bytes(images, labels, gz):
    read_pair(gzip.compress(images) if gz else images, labels)


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=0, max_size=4),
       ndim=st.integers(0, 255), dtype=st.sampled_from([0x08, 0x09, 0x0B, 0x0D, 0x00]),
       payload=st.binary(max_size=64), gz_cut=st.one_of(st.none(), st.integers(0, 40)))
def test_fuzz_idx_headers(dims, ndim, dtype, payload, gz_cut):
    """Lying headers: any magic, rank and dimensions (huge ones too) over a few bytes."""
    images = struct.pack(">4B", 0, 0, dtype, ndim) + struct.pack(f">{len(dims)}I", *dims) + payload
    if gz_cut is not None:
        images = gzip.compress(images)[:gz_cut + 10]
    read_pair(images, GOOD_LABELS)


# --- CSV -----------------------------------------------------------------------------------

GOOD_CSV = "label," + ",".join(f"p{i}" for i in range(4)) + "\n1,0,255,3,4\n2,9,8,7,6\n"


@FUZZ
@given(text=st.one_of(st.text(alphabet="0123456789,.-+eEinfaNlbl \"\n\r\t;x", max_size=120),
                      mutated(GOOD_CSV.encode()).map(lambda b: b.decode("latin-1"))),
       encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
@example(text=GOOD_CSV, encoding="utf-8")
def test_fuzz_csv(text, encoding):
    read_file("data.csv", text.encode(encoding, "replace"))


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_csv_random_bytes(data):
    read_file("data.csv", data)


# --- NPZ -----------------------------------------------------------------------------------

def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = npz(x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 2]))
ANY_DTYPE = st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(), hnp.byte_string_dtypes())


@FUZZ
@given(x=hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)),
       y=hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)),
       keys=st.sampled_from([("x", "y"), ("images", "labels"), ("x", "z"), ("a", "b")]))
def test_fuzz_npz_arrays(x, y, keys):
    """Any dtype (floats with NaN/inf, complex, datetimes, strings) and any shape."""
    read_file("data.npz", npz(**{keys[0]: x, keys[1]: y}))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated(GOOD_NPZ)))
def test_fuzz_npz_bytes(data):
    read_file("data.npz", data)


# --- archives ------------------------------------------------------------------------------

def png(side: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 7, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


MEMBER = st.tuples(
    st.sampled_from(["", "../", "../../", "/", "./", "a/../../", "C:\\", f"{OUTSIDE}/", "0\\..\\..\\"]),
    st.sampled_from(["0/a.png", "1/b.png", "0", "x.npz", "d/", "a.csv", "..", ".hidden"]),
    st.one_of(st.just(b"PNG"), st.binary(max_size=40)),
).map(lambda t: (t[0] + t[1], png() if t[2] == b"PNG" else t[2]))


def zip_of(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def tar_of(members, kinds, mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for (name, data), (kind, target) in zip(members, kinds):
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = target
            else:
                info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


GOOD_ZIP = zip_of([("0/a.png", png()), ("1/b.png", png())])
GOOD_TAR = tar_of([("0/a.png", png()), ("1/b.png", png())], [(tarfile.REGTYPE, "")] * 2, "w:gz")
KIND = st.tuples(st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                  tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]),
                 st.sampled_from([".", "..", "../x", "/etc/passwd", "0/a.png", "0", str(OUTSIDE), "a/b"]))


@FUZZ
@given(members=st.lists(MEMBER, min_size=1, max_size=5, unique_by=lambda m: m[0]))
def test_fuzz_zip_members(members):
    """Hostile member names (zip slip, absolute, drive letters) and contents."""
    read_file("data.zip", zip_of(members))


@FUZZ
@given(members=st.lists(st.tuples(MEMBER, KIND), min_size=1, max_size=5),
       mode=st.sampled_from(["w", "w:gz"]))
def test_fuzz_tar_members(members, mode):
    """Hostile names, links (in and out), devices and fifos."""
    read_file("data.tar.gz" if mode == "w:gz" else "data.tar",
              tar_of([m for m, _ in members], [k for _, k in members], mode))


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), mutated(GOOD_ZIP), mutated(GOOD_TAR)),
       name=st.sampled_from(["data.zip", "data.tar", "data.tgz", "data.tar.gz", "blob"]))
def test_fuzz_archive_bytes(data, name):
    read_file(name, data)
