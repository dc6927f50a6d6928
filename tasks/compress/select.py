"""Selection: the budget relative to the teacher, the best variant within it by the objective,
when the lazy build stops, and distillation's gain over its control."""

from __future__ import annotations

from evergreen.config import CompressConfig, SelectConfig


def budget_failures(row: dict, teacher: dict, cfg: SelectConfig) -> list[str]:
    """Why a variant is outside the budget (empty when it fits)."""
    why = []
    drop = round(teacher["val_accuracy"] - row["val_accuracy"], 6)
    if drop > cfg.max_accuracy_drop:
        why.append(f"val accuracy {drop:.4f} below the teacher's (max_accuracy_drop "
                   f"{cfg.max_accuracy_drop})")
    share = row["size_bytes"] / teacher["size_bytes"]
    if cfg.max_size_ratio is not None and share > cfg.max_size_ratio:
        why.append(f"size {row['size_bytes'] / 1024:.1f} KB is {share:.2f} of the teacher's "
                   f"> max_size_ratio {cfg.max_size_ratio}")
    if cfg.max_latency_ms is not None and row["latency_ms_p95"] > cfg.max_latency_ms:
        why.append(f"latency p95 {row['latency_ms_p95']:.3f} ms > max_latency_ms {cfg.max_latency_ms}")
    if cfg.max_size_kb is not None and row["size_bytes"] / 1024 > cfg.max_size_kb:
        why.append(f"size {row['size_bytes'] / 1024:.1f} KB > max_size_kb {cfg.max_size_kb}")
    speedup = teacher["latency_ms_p50"] / row["latency_ms_p50"]
    if speedup < cfg.min_speedup:
        why.append(f"{speedup:.2f}x faster than the teacher (p50) < min_speedup {cfg.min_speedup}")
    return why


OBJECTIVES = {
    "accuracy": lambda r: (-r["val_accuracy"], r["latency_ms_p50"], r["size_bytes"]),
    "latency": lambda r: (r["latency_ms_p50"], -r["val_accuracy"]),
    "size": lambda r: (r["size_bytes"], -r["val_accuracy"]),
}


def select_variant(rows: list[dict], cfg: SelectConfig) -> tuple[str | None, str]:
    """The best variant within budget by the objective, and a sentence saying why.

    Marks every row with `fits` and `outside_budget` (the reasons it does not fit).
    """
    teacher = next(r for r in rows if r["name"] == "teacher")
    for row in rows:
        row["outside_budget"] = budget_failures(row, teacher, cfg)
        row["fits"] = not row["outside_budget"]
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        detail = "; ".join(f"{r['name']}: {', '.join(r['outside_budget'])}" for r in rows
                           if r["name"] != "teacher")
        if cfg.fallback == "teacher":  # a good model is not thrown away for want of a smaller one
            return "teacher", (f"no variant fits the compression budget ({detail}); the teacher "
                               "is the candidate (compress.select.fallback: teacher)")
        return None, f"no variant fits the compression budget ({detail})"
    best = min(fitting, key=OBJECTIVES[cfg.objective])
    return best["name"], (f"{best['name']}: best {cfg.objective} of {len(fitting)} variants "
                          f"within budget ({', '.join(r['name'] for r in fitting)})")


def building_stops(cfg: CompressConfig, rows: list[dict], candidate: str) -> str | None:
    """Why the later build rounds are skipped (None: go on). With compress.build lazy and the
    accuracy objective, building stops once a compressed variant fits the budget: a later
    round is harsher (more pruning, or a student a seventh of the teacher) and costs more
    training. Everything is built for the latency or size objective, for a student that is
    the candidate, and when distillation is measured against its control."""
    if cfg.build == "all" or cfg.select.objective != "accuracy" or cfg.control \
            or candidate == "student":
        return None
    fitting = [r["name"] for r in rows if r.get("fits") and r["name"] != "teacher"]
    if not fitting:
        return None
    return (f"{', '.join(fitting)} already fit the budget, so the harsher variants were not built "
            "(compress.build: lazy; set it to all to build every variant)")


def distillation_gain(rows: list[dict]) -> dict | None:
    """Test accuracy of the distilled student minus its no-distillation control."""
    by_name = {r["name"]: r for r in rows}
    if "distilled" not in by_name or "control" not in by_name:
        return None
    d, c = by_name["distilled"]["accuracy"], by_name["control"]["accuracy"]
    return {"distilled": d, "control": c, "gain": d - c}
