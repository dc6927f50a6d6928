"""The registry as data: every candidate, the versions, the champion alias and its audit trail.

Pure dict operations; reading and writing the file is mains/versions.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from evergreen.errors import BadInputError


def empty_registry() -> dict:
    return {"champion": None, "versions": {}, "candidates": [], "history": []}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def find_version(registry: dict, sha256: str) -> str | None:
    return next((v for v, info in registry["versions"].items() if info["sha256"] == sha256), None)


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
