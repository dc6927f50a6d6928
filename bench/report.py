"""Benchmark entries ({value, unit, anchor, goal, pass}) and the table `evergreen bench` prints."""

from __future__ import annotations

import math


def entry(value, unit: str, anchor: str | None, goal: str | None, passed: bool | None,
          **details) -> dict:
    """One row of reports/bench.json; `pass` is None where there is no goal to meet."""
    if isinstance(value, float):
        value = round(value, 4) if math.isfinite(value) else None
    row = {"value": value, "unit": unit, "anchor": anchor, "goal": goal,
           "pass": None if passed is None else bool(passed)}
    if details:
        row["details"] = details
    return row


def not_run(goal: str | None, reason: str, unit: str = "", error: bool = False) -> dict:
    """A benchmark that could not run: an error (it failed) or skipped (with the reason)."""
    return {"value": None, "unit": unit, "anchor": None, "goal": goal, "pass": None,
            ("error" if error else "skipped"): reason}


def shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(benchmarks: dict[str, dict]) -> str:
    """A plain-text table: name, value, anchor, goal, pass (or why it did not run)."""
    rows = [("benchmark", "value", "anchor", "goal", "pass")]
    for name, b in benchmarks.items():
        value = f"{shown(b.get('value'))} {b.get('unit', '')}".strip()
        verdict = {True: "yes", False: "NO", None: "-"}[b.get("pass")]
        if "error" in b:
            value, verdict = "error", "error: " + b["error"].splitlines()[-1][:70]
        elif "skipped" in b:
            value, verdict = "skipped", b["skipped"][:80]
        rows.append((name, value, b.get("anchor") or "-", b.get("goal") or "-", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
