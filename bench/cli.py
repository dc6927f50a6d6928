"""`evergreen bench`: the command's body, dispatched to by name from app/cli.py."""

from __future__ import annotations

import json
import os

from evergreen.errors import BadInputError


def cmd_bench(args, ws) -> int:
    """Run the benchmarks (each group in its own process), print them, write reports/bench.json."""
    from bench.core import GROUPS, run_all
    from evergreen.workspace import write_json

    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        raise BadInputError(f"bench --only: unknown group(s) {', '.join(unknown)}; "
                            f"expected one of {', '.join(GROUPS)}")
    if args.mnist:  # checked here, so a bad folder stops the bench before anything runs
        from pathlib import Path

        from bench.data import MNIST_ENV, idx_files

        folder = Path(args.mnist).expanduser().resolve()
        idx_files(folder)
        os.environ[MNIST_ENV] = str(folder)  # the time-to-accuracy group's process reads it
    say = None if args.json else (lambda line: print(line, flush=True))
    report = run_all(ws.root, args.quick, args.only or None, progress=say)
    table = report.pop("table")
    write_json(ws.reports / "bench.json", report)
    print(json.dumps(report, indent=2) if args.json else f"\n{table}\n\nwritten to "
          f"{ws.reports / 'bench.json'} ({report['seconds']:.0f} s)")
    return 0
