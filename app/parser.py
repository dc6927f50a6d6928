"""The `evergreen` command line: every subcommand, its arguments and their help."""

from __future__ import annotations

import argparse
import os

from evergreen.stages import pure_names

DESCRIPTION = "The `evergreen` command: parse arguments, call one function, map errors to exit codes."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evergreen", description=DESCRIPTION)
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
    add_api_parser(sub)
    add_trigger_parsers(sub)
    add_registry_parsers(sub)
    add_gan_parser(sub)
    add_tune_parser(sub)
    add_bench_parser(sub)
    return parser


def add_api_parser(sub) -> None:
    api = sub.add_parser("api", help="serve the champion over HTTP (POST /predict, GET /health, "
                         "GET /metrics), 127.0.0.1 by default")
    api.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    api.add_argument("--no-batching", action="store_true", help="one forward pass per request "
                     "(the naive handler, for comparison; see bench/serving.py)")
    add_overrides(api)


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
    serve.add_argument("--api", action="store_true", help="also serve the champion over HTTP "
                       "(evergreen api, on serve.host:serve.port) from this process")
    add_overrides(serve, "serve.training_cron='0 3 * * *'")


def add_overrides(parser, example: str | None = None) -> None:
    """`--set SEC.KEY=VAL`, repeatable: any params.yaml key, for this command only."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SEC.KEY=VAL",
                        help="override a params.yaml key for this run (repeatable)"
                        + (f", e.g. {example}" if example else ""))
