"""Paired significance: McNemar's test on two models' correctness, as a one-sided gate."""

from __future__ import annotations

import numpy as np

from tasks.promote.gate import GateResult, check

EXACT_BELOW = 25  # McNemar: exact binomial under this many discordant pairs, chi-square above


def mcnemar(champion_ok: np.ndarray, challenger_ok: np.ndarray) -> dict:
    """McNemar's test on paired correctness: exact binomial for few discordant pairs,
    else chi-square with continuity correction. Two-sided p-value."""
    from scipy.stats import binomtest, chi2

    b = int((champion_ok & ~challenger_ok).sum())  # only the champion right
    c = int((~champion_ok & challenger_ok).sum())  # only the challenger right
    n = b + c
    if n < EXACT_BELOW:
        p, method = (binomtest(min(b, c), n, 0.5).pvalue if n else 1.0), "exact binomial"
    else:
        p, method = float(chi2.sf((abs(b - c) - 1) ** 2 / n, 1)), "chi-square, continuity corrected"
    return {"champion_only": b, "challenger_only": c, "pvalue": float(p), "method": method}


def ahead_gate(name: str, m: dict, alpha: float, setting: str, ours: str, theirs: str) -> GateResult:
    """McNemar result `m` (mcnemar(theirs_ok, ours_ok)) as a one-sided gate: ours must be
    ahead with one-sided p (half the two-sided one, both tests being symmetric) < alpha;
    behind or level, p counts as 1. On the digits, 7 discordant pairs against 1 is p 0.035."""
    ahead = m["challenger_only"] > m["champion_only"]
    return check(name, m["pvalue"] / 2 if ahead else 1.0, "<", alpha,
                 f"McNemar {m['method']}, one-sided: {ours} alone right {m['challenger_only']}, "
                 f"{theirs} alone right {m['champion_only']}"
                 + ("" if ahead else f"; the {ours} is not ahead (p set to 1)"), setting)


def null_model_gate(vs_null: dict, alpha: float, teacher_vs_null: dict | None = None) -> GateResult:
    """Significantly better than the null model on the paired test predictions.

    A compressed variant is judged after its teacher (`teacher_vs_null`), in a fixed sequence:
    the variant passes only if the teacher is ahead too. With the teacher standing in for a
    variant that fails (compress.select.fallback), two models are judged against the null
    model; the fixed sequence keeps the chance of promoting one no better than it at null_alpha.
    """
    gate = ahead_gate("beats_null_model", vs_null, alpha, "promote.null_alpha", "model",
                      "null model")
    if teacher_vs_null is None:
        return gate
    teacher = ahead_gate("beats_null_model", teacher_vs_null, alpha, "promote.null_alpha",
                         "teacher", "null model")
    if teacher.passed:
        return gate
    return check(gate.name, max(gate.value, teacher.value), "<", alpha,
                 f"{gate.detail}; judged after its teacher, which is not significantly ahead "
                 f"(p {teacher.value:.3g}: {teacher.detail})", gate.setting)
