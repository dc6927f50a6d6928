"""The `evergreen` command: parse arguments, call one function, map errors to exit codes.

Heavy libraries (torch, prefect, great_expectations) load inside the commands, so
`evergreen --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from evergreen.errors import BadInputError, EvergreenError

STAGE_NAMES = ("validate", "preprocess", "train", "compress", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evergreen", description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="workspace folder (default: $EVERGREEN_WORKSPACE or .)")
    parser.add_argument("--wait", type=float, default=float(os.environ.get("EVERGREEN_LOCK_WAIT", 0)),
                        metavar="S", help="wait up to S seconds for a busy workspace (default 0: exit 75)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the training-pipeline flow")
    run.add_argument("--data", help="ingest this source first: image folder or IDX files")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=VAL",
                     help="override a params.yaml key for this run (repeatable)")
    ingest = sub.add_parser("ingest", help="check and land a batch (new data version), or quarantine it")
    ingest.add_argument("source", nargs="+", metavar="SRC",
                        help="image folder, IDX folder/file (or IMAGES LABELS), NPZ, CSV, zip/tar")
    stage = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=STAGE_NAMES)
    status = sub.add_parser("status", help="champion, candidates, data version")
    status.add_argument("--json", action="store_true")
    predict = sub.add_parser("predict", help="class probabilities from the champion")
    predict.add_argument("paths", nargs="+", metavar="PATH")
    predict.add_argument("--json", action="store_true")
    return parser


def setup_logging() -> None:
    """Stage modules log to `evergreen.*`; Prefect forwards those loggers to the UI."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "evergreen")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.getLogger("evergreen").setLevel(logging.INFO)


def cmd_run(args, ws) -> int:
    from evergreen.config import load_config
    from flows.report import print_outcome

    load_config(ws.params, args.overrides)  # fail fast, before Prefect starts a server
    from flows.training import training_pipeline

    result = training_pipeline(str(ws.root), data=args.data, overrides=args.overrides)
    print_outcome(result)
    return 0


def cmd_ingest(args, ws) -> int:
    from evergreen.config import load_config
    from flows import dvcfile
    from flows.stages import run_ingest

    if len(args.source) > 2:
        raise BadInputError(f"ingest: one source, or an IDX images file and its labels file; "
                            f"got {len(args.source)} paths")
    cfg = load_config(ws.params)
    dvcfile.init_workspace(ws)
    source = tuple(args.source) if len(args.source) == 2 else args.source[0]
    result = run_ingest(ws, cfg, source)
    if result["batch_id"]:
        dvcfile.track(ws.root, "data/batches")
        print(f"landed batch {result['batch_id']}: {result['added']} new samples "
              f"(data version {dvcfile.data_version(ws.root)})")
    else:
        print(f"nothing new: {result['already_present']} samples already in the dataset, "
              f"{result['repeated_in_batch']} repeated in the source; no new data version")
    for row in result["dropped"]:
        print(f"  dropped {row['source']}: {row['reason']}")
    return 0


def cmd_stage(args, ws) -> int:
    from evergreen.config import load_config
    from flows.stages import PURE_STAGES

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    summary = PURE_STAGES[args.name](ws, load_config(ws.params))
    print(json.dumps({"stage": args.name, **summary}, default=str))
    return 0


def cmd_status(args, ws) -> int:
    from flows.report import print_status, status_view

    view = status_view(ws)
    print(json.dumps(view, indent=2) if args.json else print_status(view))
    return 0


def cmd_predict(args, ws) -> int:
    from flows.report import predict_paths

    rows = predict_paths(ws, args.paths)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['path']}: {row['class']} ({row['probability']:.4f})")
    return 0


WRITERS = {"run", "ingest", "stage"}  # one of these at a time per workspace
COMMANDS = {"run": cmd_run, "ingest": cmd_ingest, "stage": cmd_stage, "status": cmd_status,
            "predict": cmd_predict}


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
    except KeyboardInterrupt:
        print(f"evergreen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
