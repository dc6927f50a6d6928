"""`evergreen run` with the stage mains timed: `python -m bench.timed_run WORKSPACE OUT.json [--set ...]`.

It runs the same CLI entry as `evergreen run`, with every stage main (mains.call_main: ingest,
validate, preprocess, train, compress, evaluate, promote) wrapped by a timer, and writes
their seconds to OUT.json. The Great Expectations runs inside ingest and validate are
timed apart, so they can count as overhead (the issue lists GX with Prefect and DVC).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

SECONDS: dict[str, float] = defaultdict(float)


def timed(fn, name: str | None = None):
    """fn, adding its seconds to SECONDS[name] (default: its first argument, a stage name)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name or args[0]] += time.perf_counter() - start
    return wrapper


def instrument() -> None:
    """Wrap the stage mains and GX validations; before flows.training imports them by name."""
    import mains
    import tasks.validate as validate

    mains.call_main = timed(mains.call_main)
    for fn in ("validate_metadata", "validate_batch"):
        setattr(validate, fn, timed(getattr(validate, fn), "gx"))


def main(argv: list[str]) -> int:
    workspace, out, sets = argv[0], Path(argv[1]), argv[2:]
    instrument()
    from app.cli import main as cli

    rc = cli(["--workspace", workspace, "run", *sets])
    gx = SECONDS.pop("gx", 0.0)
    out.write_text(json.dumps({"rc": rc, "stage_seconds": dict(SECONDS), "gx_seconds": gx}))
    return rc


if __name__ == "__main__":
    from app.cli import exit_now

    exit_now(main(sys.argv[1:]))  # as the `evergreen` command exits
