"""Promote: the gate, and the registry that records every candidate and the champion."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from evergreen.config import PromoteConfig
from evergreen.errors import EvergreenError
from evergreen.workspace import read_json, write_json


@dataclass
class GateResult:
    name: str
    value: float
    threshold: float
    op: str  # ">=", "<=" or ">"
    passed: bool

    def reason(self) -> str:
        return f"{self.name}: {self.value:.4g} is not {self.op} {self.threshold:.4g}"


def check(name: str, value: float, op: str, threshold: float) -> GateResult:
    passed = {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold}[op]
    return GateResult(name, float(value), float(threshold), op, bool(passed))


def run_gates(candidate: dict, null_accuracy: float, champion_accuracy: float | None,
              cfg: PromoteConfig) -> list[GateResult]:
    """Absolute thresholds, the null model, and (when there is one) the champion."""
    gates = [
        check("min_accuracy", candidate["accuracy"], ">=", cfg.min_accuracy),
        check("min_f1_macro", candidate["f1_macro"], ">=", cfg.min_f1_macro),
        check("beats_null_model", candidate["accuracy"], ">", null_accuracy),
        check("max_latency_ms", candidate["latency_ms_p95"], "<=", cfg.max_latency_ms),
        check("max_size_kb", candidate["size_bytes"] / 1024, "<=", cfg.max_size_kb),
    ]
    if champion_accuracy is not None:
        gates.append(check("not_worse_than_champion", candidate["accuracy"], ">=",
                           champion_accuracy - cfg.champion_tolerance))
    return gates


def empty_registry() -> dict:
    return {"champion": None, "versions": {}, "candidates": [], "history": []}


def load_registry(path: Path) -> dict:
    """The registry, or an empty one; a corrupt file is an error, never silently replaced."""
    if not path.exists():
        return empty_registry()
    try:
        registry = read_json(path)
    except ValueError as exc:
        raise EvergreenError(f"{path}: registry is not valid JSON ({exc}); restore it from git "
                             "or DVC before running again") from None
    missing = set(empty_registry()) - set(registry)
    if missing:
        raise EvergreenError(f"{path}: registry lacks fields {sorted(missing)}")
    return registry


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def find_version(registry: dict, sha256: str) -> str | None:
    return next((v for v, info in registry["versions"].items() if info["sha256"] == sha256), None)


def store_version(registry: dict, model_dir: Path, versions_dir: Path, sha256: str) -> str:
    """Copy the candidate's files to versions/<v> (temp dir, then rename); returns v."""
    version = find_version(registry, sha256)
    if version:
        return version
    version = f"v{len(registry['versions']) + 1}"
    try:
        versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=versions_dir, prefix=f".{version}."))
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        tmp.replace(versions_dir / version)
    except OSError as exc:
        raise EvergreenError(f"{versions_dir / version}: cannot store the candidate: "
                             f"{exc.strerror}") from None
    registry["versions"][version] = {"sha256": sha256, "path": f"models/versions/{version}",
                                     "created_at": now()}
    return version


def record(registry: dict, entry: dict, promote: bool, reason: str) -> dict:
    """Append the candidate entry; move the champion alias when promoted."""
    registry["candidates"].append(entry)
    if promote:
        registry["history"].append({"time": entry["time"], "champion": entry["version"],
                                    "previous": registry["champion"], "reason": reason})
        registry["champion"] = entry["version"]
    return registry


def save_registry(path: Path, registry: dict) -> None:
    """One atomic write: the entry and the champion switch land together or not at all."""
    write_json(path, registry)


def gate_table(gates: list[GateResult]) -> list[dict]:
    return [asdict(g) for g in gates]
