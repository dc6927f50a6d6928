"""The classifier gates: the null model (significance), the absolute thresholds the user set,
and with a champion its accuracy and batch-1 latency measured side by side."""

from __future__ import annotations

from evergreen.config import PromoteConfig
from tasks.promote.gate import GateResult, check
from tasks.promote.significance import null_model_gate


def summary_row(metrics: dict) -> dict:
    """The scalar metrics, for tables and the registry."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def run_gates(candidate: dict, champion_accuracy: float | None, cfg: PromoteConfig,
              latency: dict | None = None) -> list[GateResult]:
    """The null model (significance), the absolute thresholds the user set, and with a
    champion: accuracy and batch-1 latency measured side by side with it (`latency`)."""
    gates = [null_model_gate(candidate["vs_null"], cfg.null_alpha)]
    spread = (f"median of {candidate.get('latency_runs', '?')} batch-1 calls; "
              f"p95 {candidate['latency_ms_p95']:.3g} ms")
    absolute = (("min_accuracy", candidate["accuracy"], ">=", ""),
                ("min_f1_macro", candidate["f1_macro"], ">=", ""),
                ("max_latency_ms", candidate["latency_ms_p50"], "<=", spread),
                ("max_size_kb", candidate["size_bytes"] / 1024, "<=", ""))
    gates += [check(name, value, op, getattr(cfg, name), detail, f"promote.{name}")
              for name, value, op, detail in absolute if getattr(cfg, name) is not None]
    if champion_accuracy is not None:
        gates.append(check("not_worse_than_champion", candidate["accuracy"], ">=",
                           champion_accuracy - cfg.champion_tolerance,
                           setting="promote.champion_tolerance"))
    if latency is not None and cfg.max_latency_ratio is not None:
        gates.append(check("max_latency_ratio", latency["ratio"], "<=", cfg.max_latency_ratio,
                           f"batch-1 p50 {latency['candidate_ms']:.3g} ms against the champion's "
                           f"{latency['champion_ms']:.3g} ms, measured side by side",
                           "promote.max_latency_ratio"))
    return gates


def verdict_line(gates: list[GateResult], over_budget: list[str]) -> str:
    """The one line that says why nothing was promoted and what setting changes it."""
    failed = [g for g in gates if not g.passed]
    if failed:
        return "not promoted: " + "; ".join(
            f"gate {g.name} failed" + (f", set by {g.setting}" if g.setting else "") for g in failed)
    if over_budget:
        return ("not promoted: no compressed variant fits the budget (compress.select); "
                "compress.select.fallback=teacher promotes the teacher instead")
    return ""
