"""`evergreen ingest` as a user runs it: every format lands a new data version; bad input
exits 2 with the dataset, its DVC hash and the registry unchanged and the batch quarantined."""

import json
import tarfile
import zipfile

import numpy as np
import pytest

from app.cli import main
from evergreen import dvcfile
from tests.conftest import write_idx_pair, write_png_folder


def chunk(digits, k: int, per_class: int = 25):
    """The k-th disjoint, class-balanced slice of digits."""
    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[k * per_class:(k + 1) * per_class]
                           for c in range(10)])
    return digits.x[keep], digits.labels[keep]


def write_npz(path, x, labels):
    np.savez(path, x=x[:, 0], y=labels.astype(int))
    return path


def write_csv(path, x, labels):
    header = "label," + ",".join(f"pixel{i}" for i in range(64))
    rows = [f"{y}," + ",".join(map(str, img.ravel())) for img, y in zip(x, labels)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_zip_of_pngs(path, folder):
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            zf.write(f, f.relative_to(folder.parent))
    return path


def ingest(ws, *sources) -> int:
    return main(["--workspace", str(ws.root), "ingest", *map(str, sources)])


@pytest.fixture
def sources(tmp_path, digits):
    """Five formats, five disjoint slices of digits."""
    made = {"png": write_png_folder(tmp_path / "png", *chunk(digits, 0))}
    made["idx.gz"] = write_idx_pair(tmp_path / "idx", chunk(digits, 1)[0],
                                    chunk(digits, 1)[1].astype(int), gz=True)[0].parent
    made["npz"] = write_npz(tmp_path / "set.npz", *chunk(digits, 2))
    made["csv"] = write_csv(tmp_path / "set.csv", *chunk(digits, 3))
    zipped = write_png_folder(tmp_path / "zipped" / "digits", *chunk(digits, 4))
    made["zip"] = write_zip_of_pngs(tmp_path / "pngs.zip", zipped)
    return made


def test_each_format_lands_a_new_data_version_and_a_repeat_adds_none(workspace, sources, capsys):
    versions = []
    for kind, source in sources.items():
        assert ingest(workspace, source) == 0, kind
        assert "landed batch" in capsys.readouterr().out
        versions.append(dvcfile.data_version(workspace.root))
    assert len(set(versions)) == 5 and None not in versions
    assert len([p for p in workspace.batches.iterdir() if p.is_dir()]) == 5  # shard folders

    assert ingest(workspace, sources["png"]) == 0
    out = capsys.readouterr().out
    assert "nothing new: 250 samples already in the dataset" in out and "no new data version" in out
    assert dvcfile.data_version(workspace.root) == versions[-1]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_run_trains_on_the_union_of_ingested_batches(workspace, sources, capsys):
    for source in sources.values():
        assert ingest(workspace, source) == 0
    capsys.readouterr()
    assert main(["--workspace", str(workspace.root), "run"]) == 0
    meta = json.loads((workspace.processed / "meta.json").read_text())
    assert meta["samples"] == 1250 and sum(meta["split_sizes"].values()) == 1250


def corrupt_png(tmp_path, digits):
    root = write_png_folder(tmp_path / "src", *chunk(digits, 5))
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root, "3/broken.png: cannot decode image"


def truncated_idx(tmp_path, digits):
    x, y = chunk(digits, 5)
    images, _ = write_idx_pair(tmp_path / "src", x, y.astype(int))
    images.write_bytes(images.read_bytes()[:-100])
    return images.parent, "truncated IDX: header says 250 images of 8x8"


def csv_non_numeric(tmp_path, digits):
    path = write_csv(tmp_path / "bad.csv", *chunk(digits, 5))
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",0,", ",abc,", 1)
    path.write_text("\n".join(lines) + "\n")
    return path, "non-numeric pixel value in column"


def npz_with_nan(tmp_path, digits):
    x, y = chunk(digits, 5)
    xf = x[:, 0].astype(np.float32)
    xf[7, 2, 2] = np.nan
    np.savez(tmp_path / "bad.npz", x=xf, y=y.astype(int))
    return tmp_path / "bad.npz", "NaN"


def unknown_label(tmp_path, digits):
    x, y = chunk(digits, 5)
    return write_png_folder(tmp_path / "src", x[:12], np.array(["cat"] * 12)), "unknown labels ['cat']"


def zip_slip(tmp_path, digits):
    png = write_png_folder(tmp_path / "one", *[a[:1] for a in chunk(digits, 5)])
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        for f in png.rglob("*.png"):
            zf.write(f, f"../../evil/{f.name}")
    return tmp_path / "evil.zip", ".."


def tar_symlink_out(tmp_path, digits):
    with tarfile.open(tmp_path / "evil.tar", "w") as tf:
        info = tarfile.TarInfo("digits/0/passwd.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    return tmp_path / "evil.tar", "passwd.png"


def bomb_png(tmp_path, digits):
    from tests.tasks.ingest.helpers import png_claiming

    root = tmp_path / "src" / "0"
    root.mkdir(parents=True)
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    return root.parent, "bomb.png: image header claims more pixels"


@pytest.mark.parametrize("make_bad", [corrupt_png, truncated_idx, csv_non_numeric, npz_with_nan,
                                      unknown_label, zip_slip, tar_symlink_out, bomb_png])
def test_bad_input_exits_2_and_changes_nothing(make_bad, workspace, sources, tmp_path, digits, capsys):
    assert ingest(workspace, sources["png"]) == 0
    version, batches = dvcfile.data_version(workspace.root), sorted(workspace.batches.iterdir())
    capsys.readouterr()
    main(["--workspace", str(workspace.root), "status", "--json"])
    status = capsys.readouterr().out
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    source, message = make_bad(bad_dir, digits)

    assert ingest(workspace, source) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert dvcfile.data_version(workspace.root) == version
    assert sorted(workspace.batches.iterdir()) == batches
    main(["--workspace", str(workspace.root), "status", "--json"])
    assert capsys.readouterr().out == status
    held = list(workspace.quarantine.iterdir())
    assert len(held) == 1 and (held[0] / "reasons.txt").exists()
    assert not (tmp_path / "evil").exists() and not (workspace.root.parent / "evil").exists()


def test_missing_and_empty_sources_exit_2(workspace, tmp_path, capsys):
    assert ingest(workspace, tmp_path / "nowhere") == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ingest(workspace, tmp_path / "empty") == 2
    assert "empty" in capsys.readouterr().err


def test_source_inside_the_workspace_is_refused(workspace, sources, capsys):
    assert ingest(workspace, sources["png"]) == 0
    assert ingest(workspace, workspace.batches) == 2
    assert "data/" in capsys.readouterr().err
