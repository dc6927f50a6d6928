"""The `evergreen` command as a user runs it: start-up, exit codes, data sources, predict."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from tests.conftest import TINY_PARAMS, write_idx_pair, write_params, write_png_folder

BIN = Path(sys.executable).parent


def run_cli(*args, cwd, env=None, timeout=600):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run([str(BIN / "evergreen"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_help_imports_nothing_heavy():
    code = ("import sys, app.cli; app.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'prefect', 'great_expectations', 'dvc', 'sklearn')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("run", "stage", "status", "predict"))


def test_bad_override_exits_2_naming_the_key(workspace, capsys):
    code = main(["--workspace", str(workspace.root), "run", "--set", "train.epochs=many"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "'many'" in err
    assert not (workspace.root / "data").exists()  # failed before touching anything


def test_bad_params_file_exits_2(workspace, capsys):
    workspace.params.write_text("train:\n  epochz: 3\n")
    assert main(["--workspace", str(workspace.root), "run"]) == 2
    assert "train.epochz: unknown key" in capsys.readouterr().err


def test_status_of_an_empty_workspace(workspace, capsys):
    assert main(["--workspace", str(workspace.root), "status", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["champion"] is None and view["candidates"] == []


def test_predict_without_champion_is_an_error(workspace, capsys):
    assert main(["--workspace", str(workspace.root), "predict", "x.png"]) == 2
    assert "no champion yet" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("kind", ["png", "idx", "idx.gz"])
def test_run_on_user_data_then_status_and_predict(kind, workspace, digits, tmp_path, capsys):
    import numpy as np

    keep = np.concatenate([np.flatnonzero(digits.labels == str(c))[:60] for c in range(10)])
    x, labels = digits.x[keep], digits.labels[keep]
    if kind == "png":
        source = write_png_folder(tmp_path / "pngs", x, labels)
    else:
        source = write_idx_pair(tmp_path / "idx", x, labels.astype(int), gz=kind == "idx.gz")[0]
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "run", "--data", str(source)]) == 0
    out = capsys.readouterr().out
    assert main([*ws, "status", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    verdict = view["candidates"][0]["verdict"]
    assert view["candidates"][0]["data_version"] and f"verdict: {verdict}" in out
    # on 600 digits the logistic-regression null model can tie a 4-epoch teacher on the test
    # split; a rejection names its gate, and a forced promotion makes v1 the champion
    if verdict != "promoted":
        assert verdict == "rejected" and "not promoted: gate" in out and not view["champion"]
        assert main([*ws, "promote", "v1", "--force", "--reason", "predict test"]) == 0
        capsys.readouterr()
    png = write_png_folder(tmp_path / "one", x[:1], labels[:1]) / labels[0] / "00000.png"
    assert main([*ws, "predict", str(png), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
    assert row["class"] in set(labels)


@pytest.mark.usefixtures("prefect_harness")
def test_truncated_idx_exits_2_naming_the_file(workspace, tmp_path, capsys):
    tmp_path = tmp_path / "idx"
    tmp_path.mkdir()
    header = b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + bytes(1024))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(
        b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    code = main(["--workspace", str(workspace.root), "run", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "train-images-idx3-ubyte: truncated IDX: header says 100 images of 28x28" in err
    assert not list(workspace.batches.glob("*")) if workspace.batches.exists() else True


def noop_rerun_against_a_server(root: Path) -> subprocess.CompletedProcess:
    """`evergreen run` in a process of its own against a running Prefect server; it prints
    which heavy modules it loaded."""
    from app.temporary_api import start_temporary_server
    from app.ui import healthy

    code = ("import atexit, sys; from app.cli import main; atexit.register(lambda: print("
            "'heavy modules loaded:', [m for m in ('torch', 'pandas', 'sklearn', 'great_expectations',"
            f" 'matplotlib') if m in sys.modules])); sys.exit(main(['--workspace', {str(root)!r}, 'run']))")
    server, proc, log = start_temporary_server()
    try:
        deadline = time.monotonic() + 180
        while not healthy(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PREFECT_API_URL": server.api_url})
    finally:
        proc.terminate()
        log.close()


@pytest.mark.slow
def test_new_user_run_twice_then_dvc_is_clean(tmp_path):
    """The acceptance path in a fresh workspace: two `evergreen run`s, then DVC checks."""
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, TINY_PARAMS)
    first = run_cli("run", cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "verdict: promoted" in first.stdout
    second = noop_rerun_against_a_server(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "stages run: none" in second.stdout and "verdict: unchanged" in second.stdout
    # quick (issue 8: <= 5 s against a running server): none of the heavy libraries loads
    assert "heavy modules loaded: []" in second.stdout
    from tests.evergreen.test_dvc import dvc as run_dvc

    dvc = lambda *a: run_dvc(root, *a)  # noqa: E731
    assert "up to date" in dvc("status").stdout
    repro = dvc("repro")
    assert repro.returncode == 0 and "didn't change" in repro.stdout
    (root / "models" / "teacher" / "model.safetensors").unlink()
    assert dvc("checkout").returncode == 0
    assert (root / "models" / "teacher" / "model.safetensors").exists()
    status = json.loads(run_cli("status", "--json", cwd=root).stdout)
    assert status["champion"]["version"] == "v1" and len(status["candidates"]) == 2


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_makes_openmp_wait_without_spinning_unless_told(preset, expected):
    """Spinning OpenMP waits make training 15x slower beside one busy process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = ("import os, sys\nfrom app import cli\nsys.argv = ['evergreen', '--help']\n"
            "try:\n    cli.console()\nexcept SystemExit:\n    pass\n"
            "print('policy', os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120).stdout
    assert f"policy {expected}" in out.splitlines()
