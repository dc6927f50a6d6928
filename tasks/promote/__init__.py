"""Promote's logic: every gate (thresholds, null model, champion/challenger, McNemar,
forgetting, the generator's), the registry as data and its typed candidate entry.

No file I/O here: the registry file and the version store are mains/versions.py.
"""

from tasks.promote.challenger import challenger_gates, class_recall, paired_summary
from tasks.promote.classifier import (
    judged_role,
    run_gates,
    summary_row,
    teacher_first,
    verdict_line,
)
from tasks.promote.entry import CandidateEntry, Judgement
from tasks.promote.gate import GateResult, check, gate_table
from tasks.promote.generator import gan_gates
from tasks.promote.registry import (
    champion_entry,
    empty_registry,
    find_version,
    force_promote,
    now,
    record,
    rollback,
    rollback_target,
    switch_champion,
)
from tasks.promote.significance import ahead_gate, mcnemar, null_model_gate

__all__ = ["CandidateEntry", "GateResult", "Judgement", "ahead_gate", "challenger_gates",
           "champion_entry", "check", "class_recall", "empty_registry", "find_version",
           "force_promote", "gan_gates", "gate_table", "judged_role", "mcnemar", "now",
           "null_model_gate", "paired_summary", "record", "rollback", "rollback_target",
           "run_gates", "summary_row", "switch_champion", "teacher_first", "verdict_line"]
