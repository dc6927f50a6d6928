"""The stage registry: one entry per stage, in pipeline order.

dvc.yaml, the CLI's stage choices, the flows' stage lists and the stages' Prefect task options
are derived from it, so adding a stage is adding one entry here (plus its config section and
its main, which carry the same name). Stages that change state (ingest lands a batch, promote
moves the champion) are listed too, marked as such: they are not in dvc.yaml.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage. Its name is also its params.yaml section, its dvc.yaml stage and its Prefect
    task; paths are relative to the workspace, code paths to the repository."""

    name: str
    main: str  # "module:function", the workspace I/O around the stage's logic; imported when run
    changes_state: bool = False  # outside the pure DAG, so not in dvc.yaml
    reads: tuple[str, ...] = ()  # params of other sections the stage needs, besides its own
    deps: tuple[str, ...] = ()  # data it reads
    code: tuple[str, ...] = ()  # its code: a dvc.yaml dep where the code lives in the workspace
    outs: tuple[str, ...] = ()  # outputs kept in the DVC cache
    reports: tuple[str, ...] = ()  # small outputs (reports, plot data) left out of the cache
    metrics: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()  # images the stage draws: dvc.yaml plots
    retries: int = 0  # Prefect retries, on errors that are not the user's

    @property
    def params(self) -> list[str]:
        """The params.yaml keys it depends on: its own section and what it reads."""
        return [self.name, *self.reads]


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "flows.stages:run_ingest", changes_state=True, retries=1),
    Stage("validate", "flows.stages:run_validate",
          deps=("data/batches",), code=("tasks/validate",),
          reports=("reports/validation.json", "reports/validation.html")),
    Stage("preprocess", "flows.stages:run_preprocess",
          deps=("data/batches", "reports/validation.json"),
          code=("tasks/preprocess.py", "tasks/ingest.py"), outs=("data/processed",)),
    Stage("train", "flows.stages:run_train", retries=1,
          deps=("data/processed",),
          code=("tasks/train", "nets"),
          outs=("models/teacher",), reports=("reports/plots/train.csv",),
          figures=("reports/figures/train_curves.png",)),
    Stage("compress", "flows.stages:run_compress", reads=("promote.candidate",),
          deps=("data/processed", "models/teacher"),
          code=("tasks/compress", "tasks/export.py", "tasks/pareto.py", "tasks/evaluate.py",
                "tasks/train", "nets"),
          outs=("models/student", "models/variants", "models/selected"),
          reports=("reports/compression.json", "reports/plots/compress.csv"),
          figures=("reports/figures/compress_curves.png", "reports/figures/pareto.png")),
    Stage("evaluate", "flows.stages:run_evaluate", reads=("promote.candidate",),
          deps=("data/processed", "models/teacher", "models/student", "models/selected"),
          code=("tasks/evaluate.py", "nets/runtime.py", "nets/inputs.py"),
          reports=("reports/plots/confusion.csv", "reports/plots/roc.csv"),
          metrics=("reports/metrics.json",),
          figures=("reports/figures/confusion_matrix.png", "reports/figures/roc.png",
                   "reports/figures/predictions.png")),
    Stage("promote", "flows.stages:run_promote", changes_state=True, retries=1),
)


def stage(name: str) -> Stage:
    """The registry entry called `name`."""
    for entry in STAGES:
        if entry.name == name:
            return entry
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def pure_stages() -> list[Stage]:
    """The stages of the reproducible DAG (dvc.yaml), in pipeline order."""
    return [s for s in STAGES if not s.changes_state]


def pure_names() -> list[str]:
    return [s.name for s in pure_stages()]


def load_main(entry: Stage) -> Callable:
    """The stage's main function (imported now: mains sit above this layer)."""
    module, function = entry.main.split(":")
    return getattr(importlib.import_module(module), function)
