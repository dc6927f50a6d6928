"""A gate: one measured value against one threshold, with the setting that moves it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GateResult:
    name: str
    value: float
    threshold: float
    op: str  # ">=", "<=", ">" or "<"
    passed: bool
    detail: str = ""  # what the value measures, e.g. the class whose recall fell most
    setting: str = ""  # the params key that moves this gate, e.g. promote.min_accuracy

    def reason(self) -> str:
        why = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {self.value:.4g} is not {self.op} {self.threshold:.4g}{why}"


def check(name: str, value: float, op: str, threshold: float, detail: str = "",
          setting: str = "") -> GateResult:
    passed = {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold,
              "<": value < threshold}[op]
    return GateResult(name, float(value), float(threshold), op, bool(passed), detail, setting)


def gate_table(gates: list[GateResult]) -> list[dict]:
    return [asdict(g) for g in gates]
