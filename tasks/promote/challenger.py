"""The champion/challenger gates: per-class recall drop, forgetting on the champion's old test
split and, when required, a significant improvement (McNemar), from paired predictions."""

from __future__ import annotations

import numpy as np

from evergreen.config import PromoteConfig
from tasks.promote.gate import GateResult, check
from tasks.promote.significance import ahead_gate, mcnemar


def class_recall(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {str(c): float((pred[truth == c] == c).mean()) for c in np.unique(truth)}


def paired_summary(truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray,
                   alpha: float) -> dict:
    """Both models on the same samples: accuracies, McNemar, per-class recall drop."""
    ok_champ, ok_chal = champion == truth, challenger == truth
    test = mcnemar(ok_champ, ok_chal)
    recall_champ, recall_chal = class_recall(truth, champion), class_recall(truth, challenger)
    drops = {c: recall_champ[c] - recall_chal[c] for c in recall_champ}
    worst = max(drops, key=drops.get)
    return {"samples": int(len(truth)), "champion_accuracy": float(ok_champ.mean()),
            "challenger_accuracy": float(ok_chal.mean()), "mcnemar": test,
            "improvement": test["challenger_only"] > test["champion_only"] and test["pvalue"] < alpha,
            "regression": test["champion_only"] > test["challenger_only"] and test["pvalue"] < alpha,
            "max_class_recall_drop": float(drops[worst]), "worst_class": worst,
            "class_recall": {c: [recall_champ[c], recall_chal[c]] for c in recall_champ}}


def challenger_gates(comparison: dict, cfg: PromoteConfig) -> list[GateResult]:
    """Per-class recall drop, forgetting on the old test split, and (when required) a
    significant improvement by McNemar's test."""
    cur, old = comparison["current_test"], comparison["old_test"]
    gates = [check("max_class_recall_drop", cur["max_class_recall_drop"], "<=",
                   cfg.max_class_recall_drop, f"class {cur['worst_class']}, champion "
                   f"{cur['class_recall'][cur['worst_class']][0]:.4f} -> challenger "
                   f"{cur['class_recall'][cur['worst_class']][1]:.4f}", "promote.max_class_recall_drop")]
    if old is not None:
        gates.append(check("max_forgetting", old["champion_accuracy"] - old["challenger_accuracy"],
                           "<=", cfg.max_forgetting,
                           f"accuracy on the champion's old test split, {old['samples']} samples: "
                           f"champion {old['champion_accuracy']:.4f}, challenger "
                           f"{old['challenger_accuracy']:.4f}", "promote.max_forgetting"))
    if cfg.require_improvement:
        gates.append(ahead_gate("significant_improvement", cur["mcnemar"], cfg.mcnemar_alpha,
                                "promote.require_improvement", "challenger", "champion"))
    return gates
