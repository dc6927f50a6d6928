"""The generator's gates: distance against the noise ceiling (and a cap), coverage, the champion."""

from __future__ import annotations

from evergreen.config import GanConfig
from tasks.promote.gate import GateResult, check


def gan_gates(report: dict, champion: float | None, cfg: GanConfig) -> list[GateResult]:
    """Distance against the noise ceiling (and an absolute cap), coverage, the champion."""
    gates = [check("max_distance_ratio", report["distance_to_ceiling"], "<=", cfg.max_distance_ratio)]
    if cfg.max_distance is not None:
        gates.append(check("max_distance", report["distance"], "<=", cfg.max_distance))
    gates.append(check("min_class_coverage", report["min_class_share_vs_uniform"], ">=",
                       cfg.min_coverage_ratio))
    if champion is not None:
        gates.append(check("not_worse_than_champion", report["distance"], "<=",
                           champion * (1 + cfg.champion_tolerance)))
    return gates
