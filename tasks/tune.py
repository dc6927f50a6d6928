"""Tune: the Optuna search space from params.yaml, a trial's train params, the study's summary.

A trial trains a teacher with its train params on the workspace's train split; its value is
the validation accuracy of the model train returns, and each epoch's val_acc goes to the
pruner. No Prefect here: flows/tune.py runs one task per trial around `run_trial`.
"""

from __future__ import annotations

import io
import json
import math
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from evergreen.config import Config, TrainConfig, params_hash
from evergreen.errors import ConfigError

RANGE_KEYS, CHOICE_KEYS = {"low", "high", "log", "step"}, {"choices"}
TUNABLE = ("train",)  # a trial trains the teacher: only its params change the objective
IN_PROCESS = ("train.distributed",)  # trials report each epoch to the pruner, so no DDP
OBJECTIVE = "validation accuracy of the teacher (train's returned model) on the val split"


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config path and its distribution."""

    path: str
    kind: str  # "float" | "int" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value for this param, as the config takes it."""
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.path, self.low, self.high, log=self.log, step=self.step or 1)
        return decode(trial.suggest_categorical(self.path, [encode(c) for c in self.choices]))

    def contains(self, value: Any) -> bool:
        """Whether `value` (a config value) is a point of this dimension."""
        if self.kind == "choice":
            return encode(value) in [encode(c) for c in self.choices]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        return self.step is None or math.isclose((value - self.low) / self.step,
                                                 round((value - self.low) / self.step))


def encode(choice: Any) -> Any:
    """Optuna's categorical values are None, bool, int, float or str: a list goes as JSON."""
    return json.dumps(choice) if isinstance(choice, list | dict) else choice


def decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


# ---- the search space ---------------------------------------------------------------------

def parse_space(space: dict[str, dict[str, Any]], cfg: Config,
                origin: str = "params.yaml") -> list[Param]:
    """tune.space as Params; a bad key or spec is a ConfigError naming it and what was expected."""
    if not space:
        raise ConfigError(f"{origin}: tune.space: empty; expected param path -> "
                          "{low, high[, log, step]} or {choices: [...]}, e.g. train.lr")
    return [parse_param(path, spec, cfg, f"{origin}: tune.space.{path}")
            for path, spec in space.items()]


def parse_param(path: str, spec: Any, cfg: Config, where: str) -> Param:
    annotation = field_annotation(path, where)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{low, high[, log, step]}} or {{choices: [...]}}, "
                          f"got {spec!r}")
    if set(spec) <= CHOICE_KEYS and spec:
        param = choice_param(path, spec["choices"], where)
    elif {"low", "high"} <= set(spec) <= RANGE_KEYS:
        param = range_param(path, spec, leaf_types(annotation), where)
    else:
        raise ConfigError(f"{where}: keys {sorted(spec)}; expected low and high (with log or "
                          "step), or choices alone")
    for label, value in endpoints(param):
        check_value(cfg, path, value, f"{where}: {label}")
    return param


def field_annotation(path: str, where: str) -> Any:
    """The type of the config field at `path` (train.lr, train.cnn.channels)."""
    parts = path.split(".")
    if parts == ["train"]:  # `--set tune.space.train.lr.low=...` splits the key at its dots
        raise ConfigError(f"{where}: expected a param path such as train.lr as one key; from the "
                          "command line set the whole space: --set 'tune.space={train.lr: "
                          "{low: 0.001, high: 0.01, log: true}}'")
    if parts[0] not in TUNABLE or len(parts) < 2:
        raise ConfigError(f"{where}: expected a train.* key (a trial trains the teacher, so only "
                          "train params change its validation accuracy)")
    if any(path == p or path.startswith(p + ".") for p in IN_PROCESS):
        raise ConfigError(f"{where}: trials train in one process (each epoch goes to the "
                          "pruner); train.distributed cannot be tuned")
    model: type[BaseModel] = Config
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            raise ConfigError(f"{where}: {'.'.join(parts[:depth + 1])} is not a param "
                              f"(known in {'.'.join(parts[:depth]) or 'params'}: "
                              f"{', '.join(model.model_fields)})")
        annotation = field.annotation
        if depth < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise ConfigError(f"{where}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            model = annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        raise ConfigError(f"{where}: is a section; expected one of its keys "
                          f"({', '.join(annotation.model_fields)})")
    return annotation


def leaf_types(annotation: Any) -> set[type]:
    """The plain types a field accepts: float | int | None -> {float, int, NoneType}."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return leaf_types(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(leaf_types(a) for a in args))
    if origin is typing.Literal:
        return {type(a) for a in args}
    return {origin or annotation}


def range_param(path: str, spec: dict, accepted: set[type], where: str) -> Param:
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    kind = "float" if float in accepted else "int" if int in accepted else None
    if kind is None:
        raise ConfigError(f"{where}: not a numeric param; expected {{choices: [...]}}")
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: {name} {value!r}: expected a number")
        if kind == "int" and value is not None and not isinstance(value, int):
            raise ConfigError(f"{where}: {name} {value!r}: expected an integer ({path} is an int)")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log {log!r}: expected true or false")
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: expected low > 0, got low {low}")
    if log and step is not None:
        raise ConfigError(f"{where}: log and step {step}: expected one of them, not both")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step {step}: expected a positive number")
    if kind == "float":
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Param(path, kind, low, high, log, step)


def choice_param(path: str, choices: Any, where: str) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices {choices!r}: expected a non-empty list")
    plain = (type(None), bool, int, float, str, list)
    bad = [c for c in choices if not isinstance(c, plain)]
    if bad:
        raise ConfigError(f"{where}: choice {bad[0]!r}: expected a number, string, bool, null or list")
    return Param(path, "choice", choices=tuple(choices))


def endpoints(param: Param) -> list[tuple[str, Any]]:
    if param.kind == "choice":
        return [("choice", c) for c in param.choices]
    return [("low", param.low), ("high", param.high)]


def check_value(cfg: Config, path: str, value: Any, where: str) -> None:
    """A value of the space must be one the config itself accepts at `path`."""
    try:
        Config.model_validate(set_path(cfg.to_params(), path, value))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{where} {value!r} is not a valid {path}: {err['msg']}") from None


def set_path(data: dict, path: str, value: Any) -> dict:
    """`data` (a params mapping, changed in place) with `path` set to `value`."""
    node = data
    *sections, key = path.split(".")
    for part in sections:
        node = node.setdefault(part, {})
    node[key] = value
    return data


def get_path(data: dict, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


# ---- trials -----------------------------------------------------------------------------

def suggest(trial, space: list[Param]) -> dict[str, Any]:
    """The trial's params, path -> config value."""
    return {p.path: p.suggest(trial) for p in space}


def trial_config(cfg: Config, values: dict[str, Any], epochs: int | None) -> TrainConfig:
    """The train section a trial trains with: cfg's, with the trial's values and tune.epochs
    (unless train.epochs is tuned), in one process."""
    data = cfg.to_params()
    if epochs is not None:
        data["train"]["epochs"] = epochs
    for path, value in values.items():
        set_path(data, path, value)
    data["train"].pop("distributed", None)
    return Config.model_validate(data).train


def current_values(cfg: Config, space: list[Param]) -> tuple[dict[str, Any], list[str]]:
    """The config's own values of the space (Optuna's representation), and the paths whose
    value lies outside it (those a defaults trial cannot fix)."""
    data, inside, outside = cfg.to_params(), {}, []
    for p in space:
        value = get_path(data, p.path)
        if p.contains(value):
            inside[p.path] = encode(value)
        else:
            outside.append(p.path)
    return inside, outside


class PruneHook:
    """fit's on_epoch: report val_acc at this epoch; raise TrialPruned when the pruner says so."""

    def __init__(self, trial):
        self.trial, self.epochs_run = trial, 0

    def __call__(self, row: dict, epochs: int) -> None:
        import optuna

        self.epochs_run = row["epoch"]
        self.trial.report(row["val_acc"], row["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}/{epochs} "
                                     f"(val_acc {row['val_acc']:.4f})")


def run_trial(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              classes: list[str], norm: tuple[list[float], list[float]], cfg: TrainConfig,
              on_epoch: Callable[[dict, int], None]) -> dict:
    """Train a teacher with `cfg`; its validation accuracy and what the run took.

    A TrialPruned raised by `on_epoch` passes through (fit has no handler of its own)."""
    from tasks.evaluate import predict_proba
    from tasks.train import train_model

    start = time.perf_counter()
    model, card, history = train_model(train, val, classes, norm, cfg, on_epoch=on_epoch)
    accuracy = float((predict_proba(model, card, val[0]).argmax(1) == val[1]).mean())
    return {"value": accuracy, "epochs_run": len(history),
            "seconds": round(time.perf_counter() - start, 2)}


# ---- the study ----------------------------------------------------------------------------

def make_pruner(name: str):
    """median: stop a trial below the median of finished ones at the same epoch (from the
    second epoch, once 3 trials finished); halving: successive halving, first rung at epoch 2;
    none: never."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, done: int):
    """TPE, seeded by tune.seed and the trials the study already holds: a rerun goes on from
    where the last one stopped instead of drawing the same random start-up points again."""
    import optuna

    # 5 random start-up trials (Optuna's default is 10), so the default 12 trials are mostly TPE's
    return optuna.samplers.TPESampler(seed=seed + done, n_startup_trials=5)


def study_name(data_version: str | None, data_meta: dict, cfg: Config) -> str:
    """Same data, space, trial epochs and untuned train params: the same study (a rerun adds
    trials). The tuned keys are left out, so applying the best ones keeps the study."""
    base = cfg.to_params()["train"]
    for path in cfg.tune.space:
        node = base
        *sections, key = path.split(".")[1:]
        for part in sections:
            node = node.get(part, {})
        node.pop(key, None)
    key = params_hash({"data": data_meta, "version": data_version, "space": cfg.tune.space,
                       "epochs": cfg.tune.epochs, "train": base})
    return f"tune-{(data_version or 'data')[:8]}-{key}"


def trial_rows(trials, space: list[Param]) -> list[dict]:
    """One row per trial: number, state, value, params, epochs, seconds, where it came from."""
    rows = []
    for t in trials:
        row = {"number": t.number, "state": t.state.name.lower(),
               "value": None if t.value is None else round(float(t.value), 6)}
        row.update({p.path: decode(t.params[p.path]) if p.path in t.params else None for p in space})
        row.update(epochs_run=t.user_attrs.get("epochs_run"), seconds=t.user_attrs.get("seconds"),
                   note=t.user_attrs.get("note", ""))
        rows.append(row)
    return rows


def summarize(rows: list[dict], space: list[Param], current: dict[str, Any]) -> dict:
    """The best finished trial and the trial that ran params.yaml's own values, if one did."""
    done = [r for r in rows if r["state"] == "complete"]
    best = max(done, key=lambda r: (r["value"], -r["number"]), default=None)
    wanted = {k: decode(v) for k, v in current.items()}
    defaults = next((r for r in done if len(wanted) == len(space)
                     and all(r[p.path] == wanted[p.path] for p in space)), None)
    counts = {state: sum(r["state"] == state for r in rows)
              for state in ("complete", "pruned", "fail")}
    return {"best": best, "params": {p.path: best[p.path] for p in space} if best else None,
            "defaults": defaults, "counts": {**counts, "total": len(rows)}}


# ---- writing the best params back ---------------------------------------------------------

def apply_to_yaml(text: str, values: dict[str, Any]) -> str:
    """params.yaml `text` with the `values` (path -> value) set, comments and order kept."""
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")  # round-trip (safe: no Python tags), comments and order survive
    rt.width = 4096
    rt.representer.add_representer(  # `null` stays `null`, not an empty value
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = rt.load(text) if text.strip() else None
    if data is None:
        data = {}
    for path, value in values.items():
        set_path(data, path, value)
    buf = io.StringIO()
    rt.dump(data, buf)
    return buf.getvalue()
