"""Promote: the gate, and the registry that records every candidate and the champion."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from evergreen.config import PromoteConfig
from evergreen.errors import BadInputError, EvergreenError
from evergreen.workspace import fsync_dir, fsync_tree, read_json, write_json


def summary_row(metrics: dict) -> dict:
    """The scalar metrics, for tables and the registry."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


EXACT_BELOW = 25  # McNemar: exact binomial under this many discordant pairs, chi-square above


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


def null_model_gate(vs_null: dict, alpha: float) -> GateResult:
    """Significantly better than the null model on the paired test predictions."""
    return ahead_gate("beats_null_model", vs_null, alpha, "promote.null_alpha", "model",
                      "null model")


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


def store_version(registry: dict, model_dir: Path, versions_dir: Path, sha256: str,
                  teacher_dir: Path | None = None) -> str:
    """Copy the candidate's files to versions/<v> (temp dir, then rename); returns v.

    A compressed candidate keeps the teacher it came from in versions/<v>/teacher/, so a
    retrain can warm-start the teacher architecture from it.
    """
    version = find_version(registry, sha256)
    if version:
        return version
    version, tmp = f"v{len(registry['versions']) + 1}", None
    try:
        versions_dir.mkdir(parents=True, exist_ok=True)
        clear_unreferenced(registry, versions_dir)
        tmp = Path(tempfile.mkdtemp(dir=versions_dir, prefix=f".{version}."))
        for f in model_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        if teacher_dir is not None:
            (tmp / "teacher").mkdir()
            for name in ("model.safetensors", "model.json"):
                shutil.copy2(teacher_dir / name, tmp / "teacher" / name)
        fsync_tree(tmp)  # complete on disk before it gets its name
        tmp.replace(versions_dir / version)
        fsync_dir(versions_dir)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise EvergreenError(f"{versions_dir / version}: cannot store the candidate: "
                             f"{exc.strerror}") from None
    registry["versions"][version] = {"sha256": sha256, "path": f"models/versions/{version}",
                                     "created_at": now()}
    return version


def clear_unreferenced(registry: dict, versions_dir: Path) -> None:
    """Remove what a promotion killed before its registry write left: temp and unlisted versions."""
    for path in versions_dir.iterdir():
        leftover = re.fullmatch(r"\.?v\d+(\..+)?", path.name) and path.name not in registry["versions"]
        if leftover and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def record(registry: dict, entry: dict, promote: bool, reason: str) -> dict:
    """Append the candidate entry; move the champion alias when promoted."""
    registry["candidates"].append(entry)
    if promote:
        switch_champion(registry, entry["version"], "promote", reason,
                        entry.get("run_id"), entry["time"])
    return registry


def user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"


def switch_champion(registry: dict, version: str, action: str, reason: str,
                    run_id: str | None = None, time: str | None = None) -> dict:
    """Move the champion alias and append the audit entry: who, when, what, why."""
    registry["history"].append({"time": time or now(), "action": action, "champion": version,
                                "previous": registry["champion"], "reason": reason,
                                "by": user(), "run_id": run_id})
    registry["champion"] = version
    return registry


def force_promote(registry: dict, version: str, reason: str) -> dict:
    """A manual promotion past the gates; an audit entry says who and why."""
    if version not in registry["versions"]:
        known = ", ".join(registry["versions"]) or "none yet"
        raise BadInputError(f"promote {version}: no such version in the registry (known: {known})")
    if not reason.strip():
        raise BadInputError("promote: --reason must say why the gates are overridden")
    if registry["champion"] == version:
        raise BadInputError(f"promote {version}: it is already the champion")
    return switch_champion(registry, version, "force-promote", reason.strip())


def rollback_target(registry: dict) -> str:
    """The champion before the current one's latest promotion (not counting rollbacks)."""
    current = registry["champion"]
    made = next((h for h in reversed(registry["history"]) if h["champion"] == current
                 and h.get("action", "promote") != "rollback"), None)
    if current is None or made is None or made["previous"] is None:
        raise BadInputError(f"rollback: champion {current or 'none'} has no previous champion "
                            "to return to")
    return made["previous"]


def rollback(registry: dict, reason: str) -> dict:
    """Return the champion alias to the one before; an audit entry says who and why."""
    target = rollback_target(registry)
    return switch_champion(registry, target, "rollback",
                           reason.strip() or f"rollback from {registry['champion']}")


def champion_entry(registry: dict, version: str | None = None) -> dict | None:
    """The latest candidate entry of `version` (default: the champion), whatever its verdict."""
    version = version or registry["champion"]
    return next((c for c in reversed(registry["candidates"]) if c["version"] == version), None)


def save_registry(path: Path, registry: dict) -> None:
    """One atomic write: the entry and the champion switch land together or not at all."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    write_json(path, registry)


def gate_table(gates: list[GateResult]) -> list[dict]:
    return [asdict(g) for g in gates]
