"""The `evergreen` subcommands: each parses nothing, calls one flow or function, prints."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from evergreen.errors import BadInputError, EvergreenError

# what a training run imports along the way (Prefect's run engine first); loaded while a
# temporary server boots
RUN_MODULES = ("prefect.flow_engine", "prefect.task_engine", "pandas", "great_expectations",
               "torch", "sklearn.metrics")


def cmd_run(args, ws) -> int:
    from app.printing import print_outcome
    from app.temporary_api import temporary_api

    with temporary_api() as ready:
        from flows.training import training_pipeline

        ready(preload=RUN_MODULES)
        result = training_pipeline(str(ws.root), data=args.data, overrides=args.overrides)
    print_outcome(result)
    return 0


def cmd_ingest(args, ws) -> int:
    from evergreen import dvcfile
    from evergreen.config import load_config
    from mains import call_main

    if len(args.source) > 2:
        raise BadInputError(f"ingest: one source, or an IDX images file and its labels file; "
                            f"got {len(args.source)} paths")
    cfg = load_config(ws.params)
    dvcfile.init_workspace(ws)
    source = tuple(args.source) if len(args.source) == 2 else args.source[0]
    result = call_main("ingest", ws, cfg, source=source)
    if result["batch_id"]:
        dvcfile.track(ws.root, "data/batches")
        print(f"landed batch {result['batch_id']}: {result['added']} new samples "
              f"(data version {dvcfile.data_version(ws.root)})")
    else:
        print(f"nothing new: {result['already_present']} samples already in the dataset, "
              f"{result['repeated_in_batch']} repeated in the source; no new data version")
    for row in result["dropped"]:
        print(f"  dropped {row['source']}: {row['reason']}")
    for line in result.get("drift", []):
        print(f"  drift warning: {line} (landed: validate.on_drift is warn; the retrain's "
              "label-noise screen and the gates decide)")
    print_read_log(result.get("notes", []), result.get("skipped", []))
    return 0


def print_read_log(notes: list[str], skipped: list[dict], shown: int = 10) -> None:
    """What the read chose (sizes, labels file) and which files it skipped, by name."""
    for note in notes:
        print(f"  {note}")
    if skipped:
        print(f"  skipped {len(skipped)} file(s) that are not samples:")
        for row in skipped[:shown]:
            print(f"    {row['source']}: {row['reason']}")
        if len(skipped) > shown:
            print(f"    ... and {len(skipped) - shown} more")


def cmd_stage(args, ws) -> int:
    from evergreen.config import load_config
    from mains import call_main

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    summary = call_main(args.name, ws, load_config(ws.params))
    print(json.dumps({"stage": args.name, **summary}, default=str))
    return 0


def cmd_gan(args, ws) -> int:
    from app.temporary_api import temporary_api

    with temporary_api() as ready:
        from flows.gan import gan_pipeline

        ready()
        outcome = gan_pipeline(str(ws.root), data=args.data, overrides=args.overrides)
    from app.printing import print_gan_outcome

    print_gan_outcome(outcome)
    return 0


def cmd_tune(args, ws) -> int:
    from evergreen.config import load_config
    from tasks.tune import parse_space

    for flag, value in (("--trials", args.trials), ("--timeout", args.timeout)):
        if value is not None and not value > 0:
            raise BadInputError(f"tune {flag} {value}: expected a positive number")
    cfg = load_config(ws.params, args.overrides)  # fail fast, before Prefect starts a server
    parse_space(cfg.tune.space, cfg, str(ws.params) + (" with --set" if args.overrides else ""))
    from app.temporary_api import temporary_api

    with temporary_api() as ready:
        from flows.tune import print_tune_outcome, tune_flow

        ready(preload=RUN_MODULES)
        result = tune_flow(str(ws.root), data=args.data, overrides=args.overrides,
                           trials=args.trials, timeout_s=args.timeout, apply=args.apply)
    print_tune_outcome(result)
    return 0


def cmd_status(args, ws) -> int:
    from app.printing import print_status, status_view

    view = status_view(ws)
    print(json.dumps(view, indent=2) if args.json else print_status(view))
    return 0


def cmd_ui(args, ws) -> int:
    from app.ui import resolve_server, run_ui, stop_ui
    from evergreen.config import load_config

    server = resolve_server(ws, load_config(ws.params, args.overrides).ui, args.host, args.port)
    return stop_ui(server) if args.stop else run_ui(server, background=args.background)


def cmd_api(args, ws) -> int:
    from app.api import run_api
    from evergreen.config import load_config

    cfg = load_config(ws.params, args.overrides)
    return run_api(ws, cfg, args.host or cfg.serve.host, args.port or cfg.serve.port,
                   batching=not args.no_batching)


def cmd_watch(args, ws) -> int:
    from pathlib import Path

    from prefect.logging.configuration import setup_logging as prefect_logging

    from app.console import hide_user_errors
    from app.signals import interrupt
    from app.watch import watch_folder

    prefect_logging()  # now, not at the first retrain: its console handler prints evergreen.* lines
    hide_user_errors()  # a retrain failed by our error is logged in one line (app/watch.py)
    # a service manager stops a watcher with SIGTERM: stop as on Ctrl-C, so the exit handlers
    # run (Prefect's temporary server is stopped, not left running) and the lock is released
    signal.signal(signal.SIGTERM, interrupt)
    summary = watch_folder(ws, Path(args.folder), once=args.once, overrides=args.overrides)
    print(f"landed {len(summary.landed)} batch(es), {len(summary.unchanged)} drop(s) with nothing "
          f"new, {len(summary.failed)} refused (see DIR/.failed/); {len(summary.retrains)} "
          f"retrain(s), {len(summary.retrain_errors)} failed; {len(summary.events)} event(s) sent")
    return (BadInputError.exit_code if summary.failed
            else EvergreenError.exit_code if summary.retrain_errors else 0)


def cmd_serve(args, ws) -> int:
    from app.serve import serve_workspace

    serve_workspace(ws, args.overrides, api=args.api)
    return 0


def cmd_retrain(args, ws) -> int:
    from app.printing import print_retrain
    from app.temporary_api import temporary_api

    with temporary_api() as ready:
        from flows.retraining import continual_retraining

        ready()
        outcome = continual_retraining(str(ws.root), overrides=args.overrides)
    print_retrain(outcome)
    return 0


def cmd_promote(args, ws) -> int:
    from mains.versions import load_registry, save_registry
    from tasks.promote import force_promote

    if not args.force:
        raise BadInputError(f"promote {args.version}: a manual promotion bypasses the gates; "
                            "add --force (and --reason) to do it")
    registry = load_registry(ws.registry)
    before = registry["champion"]
    save_registry(ws.registry, force_promote(registry, args.version, args.reason))
    print(f"champion: {before or 'none'} -> {args.version} (forced: {args.reason.strip()})")
    return 0


def cmd_rollback(args, ws) -> int:
    from mains.versions import load_registry, save_registry
    from tasks.promote import rollback

    registry = load_registry(ws.registry)
    before = registry["champion"]
    registry = rollback(registry, args.reason)
    save_registry(ws.registry, registry)
    print(f"champion: {before} -> {registry['champion']} (rollback: "
          f"{registry['history'][-1]['reason']})")
    return 0


def cmd_predict(args, ws) -> int:
    from app.printing import predict_paths, predictions_csv

    out = checked_output(args.csv) if args.csv else None
    rows, errors = predict_paths(ws, args.paths)
    if out is not None:
        from evergreen.workspace import atomic_write_bytes

        atomic_write_bytes(out, predictions_csv(rows))
        print(f"{len(rows)} prediction(s) written to {args.csv}")
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['path']}: {row['class']} ({row['probability']:.4f})")
    for line in errors:
        print(f"evergreen predict: error: {line}", file=sys.stderr)
    return BadInputError.exit_code if errors else 0


def cmd_evaluate(args, ws) -> int:
    from app.printing import evaluate_source, evaluation_lines

    if len(args.data) > 2:
        raise BadInputError(f"evaluate --data: one source, or an image folder and its labels CSV, "
                            f"or an IDX images file and its labels file; got {len(args.data)} paths")
    source = tuple(args.data) if len(args.data) == 2 else args.data[0]
    result, errors = evaluate_source(ws, source)
    print(json.dumps(result, indent=2) if args.json else "\n".join(evaluation_lines(result)))
    for line in errors:  # scored without them, as predict does
        print(f"evergreen evaluate: error: {line}", file=sys.stderr)
    return BadInputError.exit_code if errors else 0


def checked_output(text: str):
    """A path to (re)write a file at: a regular file or a new name in an existing folder; never
    a link, FIFO, device or folder (the file is replaced whole, not written through)."""
    import stat
    from pathlib import Path

    path = Path(text).expanduser()
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise BadInputError(f"{text}: --csv must name a regular file or a new one; this is a "
                            "link, folder, FIFO or device")
    if not path.parent.is_dir():
        raise BadInputError(f"{text}: --csv: no such folder {path.parent}")
    return path


def cmd_bench(args, ws) -> int:
    """`evergreen bench`: bench/ sits above every other layer, so it is imported by name here."""
    import importlib

    return importlib.import_module("bench.cli").cmd_bench(args, ws)


# commands that write the workspace hold its lock for their whole run (watch and serve take it
# per run, not for life; evaluate, status, predict, ui, api and bench only read it)
WRITERS = {"run", "ingest", "stage", "retrain", "promote", "rollback", "gan", "tune"}
COMMANDS = {"run": cmd_run, "ingest": cmd_ingest, "stage": cmd_stage, "status": cmd_status,
            "predict": cmd_predict, "evaluate": cmd_evaluate, "ui": cmd_ui, "api": cmd_api,
            "retrain": cmd_retrain, "promote": cmd_promote, "rollback": cmd_rollback, "watch": cmd_watch,
            "serve": cmd_serve, "gan": cmd_gan, "tune": cmd_tune, "bench": cmd_bench}
