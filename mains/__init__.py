"""Stage mains: the workspace I/O around each stage's logic in tasks/, one module per stage.

A main takes the workspace, its own config section, and as keywords only the other params
the registry says it reads (evergreen/stages.py `reads`); `call_main` hands them over, so
the flows, `evergreen stage NAME` and dvc.yaml all run a stage the same way.
"""

from __future__ import annotations

from evergreen import stages
from evergreen.config import Config
from evergreen.workspace import Workspace


def call_main(name: str, ws: Workspace, cfg: Config, **extra) -> dict:
    """Run stage `name`'s main with its section and the params it declares it reads."""
    entry = stages.stage(name)
    section, reads = stages.main_inputs(entry, cfg)
    return stages.load_main(entry)(ws, section, **reads, **extra)
