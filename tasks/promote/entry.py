"""The registry's candidate entry as a typed record, and the gates' judgement of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.promote.gate import GateResult, gate_table


@dataclass
class Judgement:
    """What the gates decided about a candidate that is not the champion already."""

    gates: list[GateResult]
    blockers: list[str] = field(default_factory=list)  # reasons besides the gates (over budget)
    promotion_reason: str = ""  # the audit trail's why, when it passes
    measured: dict = field(default_factory=dict)  # what the judging measured, kept in the entry

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and not self.blockers

    def reasons(self) -> list[str]:
        return [g.reason() for g in self.gates if not g.passed] + self.blockers


@dataclass
class CandidateEntry:
    """One row of registry["candidates"]: the model judged, the data, params and code it came
    from, and the verdict. `described` is what the kind of model adds (a classifier's role,
    arch and metrics; a generator's distance), `extra` what the flow adds (a retrain's batches)."""

    run_id: str
    described: dict
    data_version: str | None
    params_hash: str
    git_commit: str | None
    time: str
    champion_before: str | None
    extra: dict = field(default_factory=dict)
    version: str | None = None
    verdict: str | None = None  # promoted, rejected or unchanged
    gates: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    measured: dict = field(default_factory=dict)

    def unchanged(self, what: str) -> CandidateEntry:
        """The candidate is the champion itself (same weights): nothing to judge."""
        self.version, self.verdict = self.champion_before, "unchanged"
        self.reasons = [f"candidate is the {what} {self.champion_before}: nothing changed"]
        return self

    def judged(self, version: str, judgement: Judgement) -> CandidateEntry:
        self.version, self.verdict = version, "promoted" if judgement.passed else "rejected"
        self.gates, self.reasons = gate_table(judgement.gates), judgement.reasons()
        self.measured = judgement.measured
        return self

    def to_json(self) -> dict:
        return {"run_id": self.run_id, **self.described, "data_version": self.data_version,
                "params_hash": self.params_hash, "git_commit": self.git_commit, "time": self.time,
                "champion_before": self.champion_before, **self.extra, "version": self.version,
                "verdict": self.verdict, "gates": self.gates, "reasons": self.reasons,
                **self.measured}
