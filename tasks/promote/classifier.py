"""The classifier gates: the null model (significance), the absolute thresholds the user set,
and with a champion its accuracy and batch-1 latency measured side by side; which model is
judged when the selected variant fails where its teacher passes."""

from __future__ import annotations

from evergreen.config import PromoteConfig
from tasks.promote.gate import GateResult, check
from tasks.promote.significance import null_model_gate


def summary_row(metrics: dict) -> dict:
    """The scalar metrics, for tables and the registry."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def quality_gates(candidate: dict, cfg: PromoteConfig,
                  teacher_vs_null: dict | None = None) -> list[GateResult]:
    """What the candidate shows on its own: ahead of the null model (a compressed variant after
    its teacher, `teacher_vs_null`), and the accuracy and F1 thresholds the user set."""
    gates = [null_model_gate(candidate["vs_null"], cfg.null_alpha, teacher_vs_null)]
    return gates + [check(name, candidate[key], ">=", getattr(cfg, name),
                          setting=f"promote.{name}")
                    for name, key in (("min_accuracy", "accuracy"), ("min_f1_macro", "f1_macro"))
                    if getattr(cfg, name) is not None]


def run_gates(candidate: dict, champion_accuracy: float | None, cfg: PromoteConfig,
              latency: dict | None = None, teacher_vs_null: dict | None = None) -> list[GateResult]:
    """The quality gates, the latency and size thresholds the user set, and with a champion:
    accuracy and batch-1 latency measured side by side with it (`latency`)."""
    gates = quality_gates(candidate, cfg, teacher_vs_null)
    spread = (f"median of {candidate.get('latency_runs', '?')} batch-1 calls; "
              f"p95 {candidate['latency_ms_p95']:.3g} ms")
    absolute = (("max_latency_ms", candidate["latency_ms_p50"], spread),
                ("max_size_kb", candidate["size_bytes"] / 1024, ""))
    gates += [check(name, value, "<=", getattr(cfg, name), detail, f"promote.{name}")
              for name, value, detail in absolute if getattr(cfg, name) is not None]
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


def falls_back(metrics: dict, role: str) -> bool:
    """Whether the teacher may stand in for this role: a selected compressed variant whose
    selection allows it (compress.select.fallback: teacher)."""
    selected = metrics.get(role, {})
    return role == "selected" and selected.get("variant") not in (None, "teacher") \
        and selected.get("fallback") == "teacher"


def teacher_first(metrics: dict, role: str) -> dict | None:
    """The teacher's McNemar result against the null model where the role is judged after it
    (a variant the teacher may stand in for), else None."""
    return metrics["teacher"]["vs_null"] if falls_back(metrics, role) else None


def judged_role(metrics: dict, configured: str, cfg: PromoteConfig) -> tuple[str, dict | None]:
    """The model promote judges: the configured candidate, or the teacher standing in for a
    selected variant that fails the quality gates the teacher passes, as the selection allows.
    Returns the role and, for a stand-in, the variant it stands in for and what that failed."""
    if not falls_back(metrics, configured):
        return configured, None
    failed = [g.reason() for g in quality_gates(metrics[configured], cfg,
                                                teacher_first(metrics, configured))
              if not g.passed]
    if not failed or not all(g.passed for g in quality_gates(metrics["teacher"], cfg)):
        return configured, None
    return "teacher", {"variant": metrics[configured]["variant"], "failed": failed}


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
