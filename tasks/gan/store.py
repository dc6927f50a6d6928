"""The generator's version store: a copy of models/gan per version (to be replaced by the one
shared version store)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from evergreen.errors import EvergreenError


def store_generator(registry: dict, model_dir: Path, versions_dir: Path, relative: str,
                    sha256: str) -> str:
    """Copy the generator to versions_dir/<g-n> (temp dir, then rename); returns the version."""
    known = next((v for v, info in registry["versions"].items() if info["sha256"] == sha256), None)
    if known:
        return known
    version = f"g{len(registry['versions']) + 1}"
    try:
        versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=versions_dir, prefix=f".{version}."))
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        tmp.replace(versions_dir / version)
    except OSError as exc:
        raise EvergreenError(f"{versions_dir / version}: cannot store the generator: "
                             f"{exc.strerror}") from None
    registry["versions"][version] = {"sha256": sha256, "path": f"{relative}/{version}"}
    return version
