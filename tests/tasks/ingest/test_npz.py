"""NPZ: layouts, bad samples rejected, whole-file problems refused without running code."""

import io
import os

import numpy as np
import pytest

from tasks.ingest import Rejected
from tests.tasks.ingest.helpers import read, read_clean, refused

# --- NPZ ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nhw_uint8", "nhwc_unit_float", "nchw_rgb", "aliases_0_255_float"])
def test_npz_layouts(tmp_path, tiny_batch, layout):
    x, y = tiny_batch.x[:20], tiny_batch.labels[:20].astype(int)
    arrays, expected = {
        "nhw_uint8": ({"x": x[:, 0], "y": y}, x),
        "nhwc_unit_float": ({"x": x.transpose(0, 2, 3, 1) / 255.0, "y": y}, x),
        "nchw_rgb": ({"x": np.repeat(x, 3, axis=1), "y": y}, np.repeat(x, 3, axis=1)),
        "aliases_0_255_float": ({"images": x.astype(np.float32) + 0.2, "labels": y}, x),
    }[layout]
    np.savez(tmp_path / "data.npz", **arrays)

    batch = read_clean(tmp_path / "data.npz")

    np.testing.assert_array_equal(batch.x, expected)
    assert list(batch.labels) == [str(v) for v in y]
    assert batch.sources[:2] == ["data.npz[0]", "data.npz[1]"]


def test_npz_nan_inf_and_out_of_range_samples_are_rejected(tmp_path, tiny_batch):
    x = tiny_batch.x[:10, 0] / 255.0
    x[2, 0, 0], x[5, 3, 3], x[7, 1, 1] = np.nan, np.inf, -0.5
    np.savez(tmp_path / "dirty.npz", x=x, y=np.arange(10))

    batch, rejects = read(tmp_path / "dirty.npz")

    assert len(batch) == 7
    assert rejects[:2] == [Rejected("dirty.npz[2]", "NaN or inf pixel values"),
                           Rejected("dirty.npz[5]", "NaN or inf pixel values")]
    assert rejects[2].source == "dirty.npz[7]" and "outside 0..1" in rejects[2].reason


@pytest.mark.parametrize("arrays, problem", [
    ({"x": np.zeros((4, 8, 8), np.uint8)}, "expected arrays 'x'"),
    ({"x": np.zeros((4, 8, 8, 5), np.uint8), "y": np.zeros(4)}, "has shape (4, 8, 8, 5)"),
    ({"x": np.zeros((4, 64), np.uint8), "y": np.zeros(4)}, "has shape (4, 64)"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3)}, "expected (4,), one label per image"),
    ({"x": np.zeros((0, 8, 8), np.uint8), "y": np.zeros(0)}, "empty source"),
])
def test_npz_whole_file_problems_are_refused(tmp_path, arrays, problem):
    np.savez(tmp_path / "bad.npz", **arrays)
    msg = refused(tmp_path / "bad.npz")
    assert "bad.npz" in msg and problem in msg


class _RunsCode:
    """Unpickling this calls os.mkdir(target): proof that code ran."""

    target = ""

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_npz_object_array_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    _RunsCode.target = str(marker)
    np.savez(tmp_path / "evil.npz", x=np.array([_RunsCode()], dtype=object), y=np.array([0]))

    msg = refused(tmp_path / "evil.npz")

    assert "evil.npz" in msg and "Python objects" in msg
    assert not marker.exists()


def test_npz_needing_an_unsupported_zip_version_is_refused(tmp_path, tiny_batch):
    buf = io.BytesIO()
    np.savez(buf, x=tiny_batch.x[:3, 0], y=np.arange(3))
    data = bytearray(buf.getvalue())
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    data[at + 6:at + 8] = b"@\x00"  # "version needed to extract": 6.4 (found by deep fuzzing)
    (tmp_path / "v.npz").write_bytes(bytes(data))
    assert refused(tmp_path / "v.npz").startswith("v.npz: not a readable .npz file")


def test_npz_whose_header_shape_is_not_whole_numbers_is_refused(tmp_path):
    np.savez(tmp_path / "bool.npz", x=np.zeros((1, 8, 8), np.uint8), y=np.array([0]))
    data = (tmp_path / "bool.npz").read_bytes()
    assert data.count(b"(1, 8, 8), }   ") == 1
    (tmp_path / "bool.npz").write_bytes(data.replace(b"(1, 8, 8), }   ", b"(True, 8, 8), }"))
    msg = refused(tmp_path / "bool.npz")  # numpy's parser lets (True, 8, 8) through
    assert msg.startswith("bool.npz: array 'x' has a malformed .npy header"), msg
