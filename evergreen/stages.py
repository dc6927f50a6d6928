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
from typing import Any

from evergreen.config import Config, Section


@dataclass(frozen=True)
class Stage:
    """One stage. Its name is also its params.yaml section, its dvc.yaml stage and its Prefect
    task; paths are relative to the workspace, code paths to the repository."""

    name: str
    main: str  # "module:function", the workspace I/O around the stage's logic; imported when run
    changes_state: bool = False  # outside the pure DAG, so not in dvc.yaml
    reads: tuple[str, ...] = ()  # other params its main takes (a section, or section.key)
    deps: tuple[str, ...] = ()  # data it reads
    code: tuple[str, ...] = ()  # its code: a dvc.yaml dep where the code lives in the workspace
    outs: tuple[str, ...] = ()  # outputs kept in the DVC cache
    reports: tuple[str, ...] = ()  # small outputs (reports, plot data) left out of the cache
    metrics: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()  # images the stage draws: dvc.yaml plots
    retries: int = 0  # Prefect retries, on errors that are not the user's

    @property
    def code_deps(self) -> list[str]:
        """Its code as dvc.yaml deps: the main's module, then the logic it calls."""
        return [self.main.split(":")[0].replace(".", "/") + ".py", *self.code]

    @property
    def section(self) -> type[Section]:
        """Its params.yaml section's config class (TrainConfig for train)."""
        return next(f.annotation for n, f in Config.model_fields.items() if (f.alias or n) == self.name)

    @property
    def params(self) -> list[str]:
        """The params.yaml keys it depends on: its own section and what it reads."""
        return [self.name, *self.reads]


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "mains.ingest:run_ingest", changes_state=True, reads=("validate",), retries=1),
    Stage("validate", "mains.validate:run_validate",
          deps=("data/batches",), code=("tasks/validate",),
          reports=("reports/validation.json", "reports/validation.html")),
    Stage("preprocess", "mains.preprocess:run_preprocess",
          deps=("data/batches", "reports/validation.json"),
          code=("mains/processed.py", "tasks/preprocess.py", "tasks/groups.py",
                "tasks/ingest/batches.py", "tasks/data"),
          outs=("data/processed",)),
    Stage("train", "mains.train:run_train", retries=1,
          deps=("data/processed", "data/batches"),
          code=("tasks/train", "tasks/data", "nets"),
          outs=("models/teacher",), reports=("reports/plots/train.csv",),
          figures=("reports/figures/train_curves.png",)),
    Stage("compress", "mains.compress:run_compress", reads=("promote.candidate",),
          deps=("data/processed", "data/batches", "models/teacher"),
          code=("tasks/compress", "tasks/export.py", "tasks/pareto.py", "tasks/evaluate.py",
                "tasks/train", "tasks/data", "nets"),
          outs=("models/student", "models/variants", "models/selected"),
          reports=("reports/compression.json", "reports/plots/compress.csv"),
          figures=("reports/figures/compress_curves.png", "reports/figures/pareto.png")),
    Stage("evaluate", "mains.evaluate:run_evaluate", reads=("promote.candidate",),
          deps=("data/processed", "data/batches", "models/teacher", "models/student",
                "models/selected"),
          code=("tasks/evaluate.py", "tasks/data", "nets/runtime.py", "nets/inputs.py"),
          reports=("reports/plots/confusion.csv", "reports/plots/roc.csv"),
          metrics=("reports/metrics.json",),
          figures=("reports/figures/confusion_matrix.png", "reports/figures/roc.png",
                   "reports/figures/predictions.png")),
    Stage("promote", "mains.promote:run_promote", changes_state=True,
          reads=("evaluate", "preprocess"), retries=1),
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


def main_inputs(entry: Stage, cfg: Config) -> tuple[Section, dict[str, Any]]:
    """The stage's own section, and each param it reads by its last name: `promote.candidate`
    is passed as `candidate`, the section `validate` as `validate`."""
    reads = {}
    for param in entry.reads:
        section, _, key = param.partition(".")
        reads[key or section] = getattr(cfg.section(section), key) if key else cfg.section(section)
    return cfg.section(entry.name), reads


def load_main(entry: Stage) -> Callable:
    """The stage's main function (imported now: mains sit above this layer)."""
    module, function = entry.main.split(":")
    return getattr(importlib.import_module(module), function)
