"""The `evergreen` command: parse arguments, call one function, map errors to exit codes.

Heavy libraries (torch, prefect, great_expectations) load inside the commands, so
`evergreen --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import typing

from evergreen.errors import BadInputError, EvergreenError
from evergreen.stages import pure_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evergreen", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="workspace folder (default: $EVERGREEN_WORKSPACE or .)")
    parser.add_argument("--wait", type=float, default=float(os.environ.get("EVERGREEN_LOCK_WAIT", 0)),
                        metavar="S", help="wait up to S seconds for a busy workspace (default 0: exit 75)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the training-pipeline flow")
    run.add_argument("--data", help="ingest this source first: image folder or IDX files")
    add_overrides(run)
    ingest = sub.add_parser("ingest", help="check and land a batch (new data version), or quarantine it")
    ingest.add_argument("source", nargs="+", metavar="SRC",
                        help="image folder, IDX folder/file (or IMAGES LABELS), NPZ, CSV, zip/tar")
    stage = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=pure_names())
    status = sub.add_parser("status", help="champion, candidates, data version")
    status.add_argument("--json", action="store_true")
    predict = sub.add_parser("predict", help="class probabilities from the champion")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--csv", metavar="OUT", help="write one row per image to this CSV")
    add_evaluate_parser(sub)
    add_ui_parser(sub)
    add_trigger_parsers(sub)
    add_registry_parsers(sub)
    add_gan_parser(sub)
    add_tune_parser(sub)
    add_bench_parser(sub)
    return parser


def add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks, side by side on this machine; writes "
                           "reports/bench.json")
    bench.add_argument("--quick", action="store_true", help="reduced sizes (about 2 minutes)")
    bench.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    bench.add_argument("--only", action="append", default=[], metavar="GROUP",
                       help="run only this group (repeatable): pipeline, noop_rerun, compression, "
                       "inference, train_throughput, time_to_accuracy, ddp, ingest, decode, "
                       "warm_vs_scratch, gan, gtsrb (needs EVERGREEN_GTSRB)")
    bench.add_argument("--mnist", metavar="DIR", help="time to accuracy on this MNIST-format set "
                       "(train-/t10k- images-idx3-ubyte and labels-idx1-ubyte, raw or .gz) instead "
                       "of 28x28 digits generated from the bundled set")


def add_evaluate_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="the champion's metrics on a labelled source; "
                              "nothing is landed or written")
    evaluate.add_argument("--data", nargs="+", required=True, metavar="SRC",
                          help="whatever `evergreen ingest` reads: image folder (or DIR LABELS.csv), "
                          "IDX folder/file (or IMAGES LABELS), NPZ, CSV, zip/tar")
    evaluate.add_argument("--json", action="store_true", help="print the full metrics as JSON")


def add_ui_parser(sub) -> None:
    ui = sub.add_parser("ui", help="start a local Prefect server (127.0.0.1), print its URL and "
                        "PREFECT_API_URL")
    ui.add_argument("--port", type=int, help="port (default: $EVERGREEN_UI_PORT or ui.port)")
    ui.add_argument("--host", help="bind address (default: $EVERGREEN_UI_HOST or ui.host, 127.0.0.1)")
    mode = ui.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true",
                      help="return once the server answers, leaving it running")
    mode.add_argument("--stop", action="store_true", help="stop this workspace's background server")
    add_overrides(ui, "ui.port=4300")


def add_gan_parser(sub) -> None:
    gan = sub.add_parser("gan", help="the GAN image generator: `evergreen gan run`")
    gan_sub = gan.add_subparsers(dest="gan_command", required=True)
    run = gan_sub.add_parser("run", help="run the gan-pipeline flow: ingest, validate, preprocess, "
                             "train, evaluate and promote the generator")
    run.add_argument("--data", help="ingest this source first: image folder, IDX, NPZ, CSV, archive")
    add_overrides(run, "gan.steps=500")


def add_tune_parser(sub) -> None:
    tune = sub.add_parser("tune", help="search train params with Optuna (the tune flow; the space "
                          "is tune.space in params.yaml); the best go into params.yaml")
    tune.add_argument("--data", help="ingest this source first, as `evergreen run --data` does")
    tune.add_argument("--trials", type=int, metavar="N", help="trials to add (default tune.trials)")
    tune.add_argument("--timeout", type=float, metavar="S",
                      help="start no trial after S seconds (default tune.timeout_s)")
    tune.add_argument("--no-apply", dest="apply", action="store_false",
                      help="leave params.yaml as it is (best params only in reports/tune/best.json)")
    add_overrides(tune)


def add_registry_parsers(sub) -> None:
    retrain = sub.add_parser("retrain", help="continual-retraining flow on the batches landed "
                             "since the champion's data")
    add_overrides(retrain)
    promote = sub.add_parser("promote", help="make VERSION the champion past the gates (audited)")
    promote.add_argument("version", metavar="VERSION", help="a version in the registry, e.g. v3")
    promote.add_argument("--force", action="store_true", help="required: the gates are bypassed")
    promote.add_argument("--reason", required=True, metavar="TEXT", help="why, for the audit entry")
    rollback = sub.add_parser("rollback", help="return the champion to the one before (audited)")
    rollback.add_argument("--reason", default="", metavar="TEXT", help="why, for the audit entry")


def add_trigger_parsers(sub) -> None:
    watch = sub.add_parser("watch", help="ingest batches dropped in DIR and retrain on them")
    watch.add_argument("folder", metavar="DIR", help="the drop folder: each file or sub-folder is a batch")
    watch.add_argument("--once", action="store_true",
                       help="process the drops there now (waiting for each to be complete), then exit")
    add_overrides(watch, "watch.quiet_seconds=10")
    serve = sub.add_parser("serve", help="serve the deployments: training-pipeline on a cron "
                           "schedule, continual-retraining on ingest events (needs PREFECT_API_URL)")
    add_overrides(serve, "serve.training_cron='0 3 * * *'")


def add_overrides(parser, example: str | None = None) -> None:
    """`--set SEC.KEY=VAL`, repeatable: any params.yaml key, for this command only."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=VAL",
                        help="override a params.yaml key for this run (repeatable)"
                        + (f", e.g. {example}" if example else ""))


def setup_logging() -> None:
    """Stage modules log to `evergreen.*`; Prefect forwards those loggers to the UI."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "evergreen")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # without PREFECT_API_URL each command starts a temporary server; on a busy machine that
    # takes longer than Prefect's default 20 s wait
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("evergreen").setLevel(logging.INFO)


# what a training run imports along the way (Prefect's run engine first); loaded while a
# temporary server boots
RUN_MODULES = ("prefect.flow_engine", "prefect.task_engine", "pandas", "great_expectations",
               "torch", "sklearn.metrics")


def cmd_run(args, ws) -> int:
    from app.report import print_outcome
    from evergreen.config import load_config

    load_config(ws.params, args.overrides)  # fail fast, before Prefect starts a server
    from app.ui import temporary_api

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
    from evergreen.config import load_config

    load_config(ws.params, args.overrides)  # fail fast, before Prefect starts a server
    from app.ui import temporary_api

    with temporary_api() as ready:
        from flows.gan import gan_pipeline

        ready()
        outcome = gan_pipeline(str(ws.root), data=args.data, overrides=args.overrides)
    from app.report import print_gan_outcome

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
    from app.ui import temporary_api

    with temporary_api() as ready:
        from flows.tune import print_tune_outcome, tune_flow

        ready(preload=RUN_MODULES)
        result = tune_flow(str(ws.root), data=args.data, overrides=args.overrides,
                           trials=args.trials, timeout_s=args.timeout, apply=args.apply)
    print_tune_outcome(result)
    return 0


def cmd_status(args, ws) -> int:
    from app.report import print_status, status_view

    view = status_view(ws)
    print(json.dumps(view, indent=2) if args.json else print_status(view))
    return 0


def cmd_ui(args, ws) -> int:
    from app.ui import resolve_server, run_ui, stop_ui
    from evergreen.config import load_config

    server = resolve_server(ws, load_config(ws.params, args.overrides).ui, args.host, args.port)
    return stop_ui(server) if args.stop else run_ui(server, background=args.background)


def cmd_watch(args, ws) -> int:
    from pathlib import Path

    from prefect.logging.configuration import setup_logging as prefect_logging

    from app.console import hide_user_errors
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


def interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_serve(args, ws) -> int:
    from app.serve import serve_workspace

    serve_workspace(ws, args.overrides)
    return 0


def cmd_retrain(args, ws) -> int:
    from app.report import print_retrain
    from evergreen.config import load_config

    load_config(ws.params, args.overrides)  # fail fast, before Prefect starts a server
    from app.ui import temporary_api

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
    from app.report import predict_paths, predictions_csv

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
    from app.report import evaluate_source, evaluation_lines

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
# per run, not for life; evaluate, status, predict, ui and bench only read it)
WRITERS = {"run", "ingest", "stage", "retrain", "promote", "rollback", "gan", "tune"}
COMMANDS = {"run": cmd_run, "ingest": cmd_ingest, "stage": cmd_stage, "status": cmd_status,
            "predict": cmd_predict, "evaluate": cmd_evaluate, "ui": cmd_ui, "retrain": cmd_retrain,
            "promote": cmd_promote, "rollback": cmd_rollback, "watch": cmd_watch,
            "serve": cmd_serve, "gan": cmd_gan, "tune": cmd_tune, "bench": cmd_bench}


def os_error_message(exc: OSError) -> str:
    """'PATH: No space left on device (ENOSPC)' and what to do; files are replaced only whole."""
    import errno

    where = exc.filename or "a workspace file"
    code = errno.errorcode.get(exc.errno or 0, "")
    hint = {"ENOSPC": "free some disk space", "EDQUOT": "free some disk space",
            "EACCES": "make it writable for this user", "EPERM": "make it writable for this user",
            "EROFS": "use a writable workspace"}.get(code, "check the disk and permissions")
    return (f"{where}: {exc.strerror or exc}{f' ({code})' if code else ''}; {hint}, then run "
            "again (files already there are unchanged: they are only ever replaced whole)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from evergreen.workspace import resolve_workspace, workspace_lock

    try:
        ws = resolve_workspace(args.workspace)
        if args.command not in WRITERS:
            return COMMANDS[args.command](args, ws)
        with workspace_lock(ws, f"evergreen {args.command}", args.wait):
            return COMMANDS[args.command](args, ws)
    except EvergreenError as exc:
        print(f"evergreen {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, permissions: the environment, not the input (exit 1)
        print(f"evergreen {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stopped) as exc:
        return stopped(args.command, getattr(exc, "signum", signal.SIGINT))
    except BaseException as exc:
        prefect_exceptions = sys.modules.get("prefect.exceptions")
        if prefect_exceptions and isinstance(exc, prefect_exceptions.TerminationSignal):
            return stopped(args.command, exc.signal)  # SIGTERM inside a flow run: marked crashed
        raise


class Stopped(BaseException):
    """A stop signal (SIGTERM) outside a flow run: unwind, so the lock and servers are released."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_stopped(signum, frame):
    raise Stopped(signum)


def stopped(command: str, signum: int) -> int:
    """The shell's code for a command ended by a signal: 128 + its number (SIGINT 130, SIGTERM 143)."""
    print(f"evergreen {command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + int(signum)


def exit_now(rc: int) -> typing.NoReturn:
    """Exit with `rc` after the exit handlers and output flushes, but without the interpreter's
    module teardown: once torch, torchao and onnx are loaded that takes 1-3 s of every run."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's shutdown, Prefect's drains, temporary folders
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(rc)


def console() -> None:
    """The `evergreen` command."""
    # OpenMP threads that spin while they wait for each other collapse beside a busy process:
    # a 2-thread training step took 995 ms against 71 ms with sleeping waits (and 63 ms on one
    # thread). Set before torch loads its OpenMP runtime; stage and DDP processes inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # SIGTERM (`timeout`, a service manager, `kill`) unwinds as Ctrl-C does: the lock is
    # released, the temporary server stopped, exit 143; inside a flow run Prefect's own handler
    # takes over and records the run as crashed first
    signal.signal(signal.SIGTERM, raise_stopped)
    exit_now(main())


if __name__ == "__main__":
    console()
