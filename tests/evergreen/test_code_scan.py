"""No eval, exec, pickle, unsafe YAML or pickled arrays anywhere in the code: a scan of every
layer's source, and a probe that the scan finds what it looks for."""

import ast
from pathlib import Path

CODE = Path(__file__).resolve().parents[2]
LAYERS = ("app", "bench", "evergreen", "flows", "mains", "nets", "tasks")  # pyproject's root_packages


def unsafe_calls(path: Path) -> list[str]:
    """eval/exec/compile, pickle loads, unsafe YAML, torch.load without weights_only, pickled npy."""
    import yaml

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func, kw = node.func, {k.arg: k.value for k in node.keywords}
        name = func.id if isinstance(func, ast.Name) else ""
        dotted = ast.unparse(func)
        where = f"{path.name}:{node.lineno}: {dotted}"
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(where)
        elif dotted in ("pickle.load", "pickle.loads", "marshal.loads", "dill.load", "shelve.open",
                        "yaml.unsafe_load", "yaml.full_load", "torch.jit.load"):
            found.append(where)
        elif dotted == "yaml.load":
            loader = kw.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            resolved = resolve(path, ast.unparse(loader)) if loader is not None else None
            if not (isinstance(resolved, type) and issubclass(resolved, yaml.SafeLoader)):
                found.append(where)
        elif dotted == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                             and kw["weights_only"].value is True):
            found.append(where)
        elif dotted.endswith("np.load") and "allow_pickle" in kw and not (
                isinstance(kw["allow_pickle"], ast.Constant) and kw["allow_pickle"].value is False):
            found.append(where)  # numpy's default (allow_pickle=False) is safe
    return found


def resolve(path: Path, dotted: str):
    """What a dotted name (a YAML Loader) means in the module at `path`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_scan_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value = module
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def test_no_eval_exec_pickle_or_unsafe_yaml_in_the_code():
    files = [p for d in LAYERS for p in (CODE / d).rglob("*.py")]
    assert len(files) > 20
    assert [hit for p in files for hit in unsafe_calls(p)] == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import torch, numpy as np, yaml\nx = 1\n"
                   "def f(p):\n    eval(p)\n    torch.load(p)\n    np.load(p, allow_pickle=True)\n"
                   "    yaml.load(p, Loader=yaml.Loader)\n    torch.load(p, weights_only=True)\n"
                   "    yaml.load(p, Loader=yaml.SafeLoader)\n    np.load(p)\n")
    hits = unsafe_calls(bad)
    assert [h.split(": ", 1)[1] for h in hits] == ["eval", "torch.load", "np.load", "yaml.load"]


def test_the_scan_covers_every_layer_of_the_import_contract():
    import tomllib

    config = tomllib.loads((CODE / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert set(LAYERS) == set(config["root_packages"])
