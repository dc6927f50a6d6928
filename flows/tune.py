"""The `tune` flow: ingest -> validate -> preprocess (the classifier's own tasks), then an Optuna
study over train params, one task run per trial; the best params go to params.yaml.

The study lives in .evergreen/tune.db (SQLite): the same data, space and untuned train params
give the same study, so a rerun adds trials to it.
"""

from __future__ import annotations

import base64
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from evergreen import dvcfile
from evergreen.config import Config, TrainConfig, load_config
from evergreen.workspace import (
    Workspace,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    write_csv,
    write_json,
)
from flows.training import ingest_task, run_pipeline_stages, start_run
from mains.processed import load_split
from tasks.tune import (
    OBJECTIVE,
    Param,
    PruneHook,
    apply_to_yaml,
    current_values,
    get_path,
    make_pruner,
    make_sampler,
    parse_space,
    run_trial,
    study_name,
    suggest,
    summarize,
    trial_config,
    trial_rows,
)

log = logging.getLogger("evergreen.tune")


@dataclass(frozen=True)
class TrialData:
    """The processed splits every trial trains and validates on."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    classes: list[str]
    norm: tuple[list[float], list[float]]


def load_trial_data(ws: Workspace) -> TrialData:
    meta = read_json(ws.processed / "meta.json")
    return TrialData(load_split(ws, "train"), load_split(ws, "val"), meta["classes"],
                     (meta["mean"], meta["std"]))


@task(name="tune-trial", task_run_name="tune-trial-{number}", cache_policy=NO_CACHE)
def trial_task(number: int, trial, data: TrialData, cfg: TrainConfig) -> dict:
    """Train one trial's teacher; its validation accuracy is the objective (pruned: stopped)."""
    import optuna

    hook = PruneHook(trial)
    try:
        return run_trial(data.train, data.val, data.classes, data.norm, cfg, hook)
    except optuna.TrialPruned as exc:
        log.info("trial %d: %s", number, exc)
        return {"pruned": str(exc), "epochs_run": hook.epochs_run}
    except FloatingPointError as exc:  # these params diverge: a failed trial, not a failed study
        log.warning("trial %d failed: %s", number, exc)
        return {"failed": str(exc), "epochs_run": hook.epochs_run}


def objective(data: TrialData, cfg: Config, space: list[Param]):
    """Optuna's objective: suggest the trial's params, run its task, report how it ended."""
    import optuna

    def run(trial) -> float:
        values = suggest(trial, space)
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        outcome = trial_task(trial.number, trial, data, trial_config(cfg, values, cfg.tune.epochs))
        for key in ("epochs_run", "seconds"):
            if key in outcome:
                trial.set_user_attr(key, outcome[key])
        if "pruned" in outcome:
            trial.set_user_attr("note", outcome["pruned"])
            raise optuna.TrialPruned(outcome["pruned"])
        if "failed" in outcome:
            trial.set_user_attr("note", outcome["failed"])
            return float("nan")  # Optuna records a failed trial and goes on
        log.info("trial %d: val accuracy %.4f (%d epochs, %.1f s)", trial.number,
                 outcome["value"], outcome["epochs_run"], outcome["seconds"])
        return outcome["value"]

    return run


def open_study(ws: Workspace, cfg: Config, space: list[Param], name: str):
    """The workspace's study (created or resumed), with params.yaml's values queued first."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are logged by evergreen.tune
    ws.state.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{ws.state / 'tune.db'}", study_name=name,
                                load_if_exists=True, direction="maximize",
                                pruner=make_pruner(cfg.tune.pruner))
    study.sampler = make_sampler(cfg.tune.seed, len(study.get_trials(deepcopy=False)))
    # the workspace lock is held: a trial still running belongs to a run that died
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    current, outside = current_values(cfg, space)
    if outside:
        log.warning("tune: params.yaml's %s lie outside tune.space, so no trial runs its own "
                    "values", ", ".join(outside))
    else:
        study.enqueue_trial(current, user_attrs={"note": "params.yaml's values"},
                            skip_if_exists=True)
    return study


def history_png(study) -> bytes:
    """Optimization history: each trial's value and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    with matplotlib.rc_context(), warnings.catch_warnings():  # optuna sets the ggplot style
        warnings.simplefilter("ignore")  # ExperimentalWarning; no finished trial yet
        ax = plot_optimization_history(study, target_name="val accuracy")
        fig = ax.figure
        fig.set_size_inches(7, 4)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    return buf.getvalue()


def apply_best(ws: Workspace, summary: dict) -> str:
    """Write the best params into the workspace's params.yaml (the tuned keys only)."""
    if summary["params"] is None:
        return "no finished trial"
    on_file = load_config(ws.params).to_params()
    if all(get_path(on_file, k) == v for k, v in summary["params"].items()):
        return "unchanged (params.yaml already holds the best values)"
    text = ws.params.read_text(encoding="utf-8") if ws.params.exists() else ""
    atomic_write_text(ws.params, apply_to_yaml(text, summary["params"]))
    load_config(ws.params)  # still a valid config (the space's values were checked)
    return "written to params.yaml"


def write_outputs(ws: Workspace, result: dict, png: bytes) -> None:
    out = ws.reports / "tune"
    write_csv(out / "trials.csv", result["trials"])
    atomic_write_bytes(ws.reports / "figures" / "tune.png", png)
    write_json(out / "best.json", {k: result[k] for k in (
        "study", "storage", "objective", "best", "params", "defaults", "counts", "new_trials",
        "applied")})


def publish_artifacts(result: dict, png: bytes) -> None:
    from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

    create_table_artifact(result["trials"], key="tune-trials",
                          description=f"trials of {result['study']}: state, value, params")
    create_image_artifact("data:image/png;base64," + base64.b64encode(png).decode(),
                          key="tune-history", description="optimization history of the study")
    create_markdown_artifact(tune_markdown(result), key="tune-summary",
                             description="best trial, params.yaml's own values, where it was written")


def tune_markdown(result: dict) -> str:
    best, defaults, counts = result["best"], result["defaults"], result["counts"]
    lines = [f"# Tune: {result['study']}", "", f"- objective: {result['objective']}",
             f"- trials: {counts['total']} ({counts['complete']} complete, {counts['pruned']} "
             f"pruned, {counts['fail']} failed); {result['new_trials']} this run"]
    if best:
        lines.append(f"- best: trial {best['number']}, value **{best['value']:.4f}**")
        lines += [f"  - `{k}`: {v}" for k, v in result["params"].items()]
    if defaults:
        lines.append(f"- params.yaml's values: trial {defaults['number']}, value "
                     f"{defaults['value']:.4f}")
    lines.append(f"- best params: {result['applied']}")
    return "\n".join(lines)


@flow(name="tune")
def tune_flow(workspace: str, data: str | None = None, overrides: list[str] | None = None,
              trials: int | None = None, timeout_s: float | None = None, apply: bool = True) -> dict:
    """ingest -> validate -> preprocess -> trials (one task run each) -> best params written."""
    from optuna.trial import TrialState

    ws, overrides, cfg = start_run(workspace, overrides)
    space = parse_space(cfg.tune.space, cfg, str(ws.params) + (" with --set" if overrides else ""))
    landed = ingest_task(ws, cfg, data)
    stages = run_pipeline_stages(ws, cfg, landed, overrides, ["validate", "preprocess"])
    name = study_name(dvcfile.data_version(ws.root), read_json(ws.processed / "meta.json"), cfg)
    study = open_study(ws, cfg, space, name)
    # queued trials (params.yaml's values, or left by a stopped run) run now: they count as new
    before = sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
    study.optimize(objective(load_trial_data(ws), cfg, space), n_trials=trials or cfg.tune.trials,
                   timeout=timeout_s or cfg.tune.timeout_s)
    current = current_values(cfg, space)[0]
    rows = trial_rows(study.get_trials(deepcopy=False), space)
    result = {"ingest": landed, "stages": stages, "study": name, "space": [p.path for p in space],
              "storage": str(ws.state / "tune.db"), "objective": OBJECTIVE, "trials": rows,
              "new_trials": len(rows) - before, **summarize(rows, space, current)}
    result["applied"] = apply_best(ws, result) if apply else "not written (--no-apply)"
    png = history_png(study)
    write_outputs(ws, result, png)
    publish_artifacts(result, png)
    return result


def print_tune_outcome(result: dict, shown: int = 20) -> None:
    """What `evergreen tune` prints: the trials, the best one, params.yaml's own values."""
    params = result["space"]
    rows = result["trials"][-shown:]
    header = ["trial", "state", "value", "epochs", *params]
    table = [header] + [[str(r["number"]), r["state"], "—" if r["value"] is None else f"{r['value']:.4f}",
                         str(r["epochs_run"] or "—"), *(_short(r[p]) for p in params)] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    if len(result["trials"]) > shown:
        print(f"(the last {shown} of {len(result['trials'])} trials: all in reports/tune/trials.csv)")
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    counts, best, defaults = result["counts"], result["best"], result["defaults"]
    print(f"study {result['study']}: {counts['total']} trials ({result['new_trials']} this run; "
          f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed)")
    if best is None:
        print("no trial finished; nothing written")
        return
    print(f"best: trial {best['number']}, val accuracy {best['value']:.4f}: "
          + ", ".join(f"{k}={_short(v)}" for k, v in result["params"].items()))
    if defaults:
        print(f"params.yaml's values: trial {defaults['number']}, val accuracy {defaults['value']:.4f}")
    print(f"best params {result['applied']}; reports/tune/best.json, reports/tune/trials.csv, "
          "reports/figures/tune.png")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
