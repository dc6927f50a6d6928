"""Reading params.yaml: YAML 1.2, --set overrides, validation, hashing, defaults."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evergreen.config.root import SECTIONS, Config
from evergreen.errors import ConfigError


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader reading `1e-4` as a float (YAML 1.2) and refusing a key given twice."""

    # plain YAML reads `1e-4` as a string and keeps the last of two equal keys silently

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden: that is what they are for
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _TooDeep(yaml.YAMLError):
    """Nested deeper than Python's recursion allows."""


def read_yaml(text: str):
    """Parse YAML safely (no object construction) with YAML 1.2 floats; too deep is a YAMLError."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _TooDeep("nested too deeply") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, and what it found."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).strip().splitlines()[0]
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (exc.problem or exc.context or "unreadable").strip()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {_short(err['input'])})"
    if err["type"] == "model_type":  # pydantic says "a valid dictionary or instance of XConfig"
        return f"{key}: expected a section (a mapping of keys), got {_short(err['input'])}"
    return f"{key}: {err['msg']} (got {_short(err['input'])})"


def parse_config(data: dict[str, Any], origin: str = "params.yaml") -> Config:
    """Validate a params mapping; raise ConfigError naming each bad key and value, one a line."""
    try:
        return Config.model_validate(data or {})
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        if len(lines) == 1:
            raise ConfigError(f"{origin}: {lines[0]}") from None
        raise ConfigError(f"{origin}: invalid config:\n  " + "\n  ".join(lines)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to a copy."""
    data = copy.deepcopy(data)  # not a JSON round trip: params.yaml may hold a date
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {_short(item)}: expected section.key=value")
        if parts[0] not in SECTIONS:
            raise ConfigError(f"--set {_short(item)}: unknown section {_short(parts[0])}, "
                              f"expected one of {', '.join(SECTIONS)}")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {_short(item)}: {'.'.join(parts[:depth + 1])} is "
                                  f"{_short(node)} in params.yaml, not a section")
        node[parts[-1]] = _override_value(item, ".".join(parts), raw)
    return data


def _override_value(item: str, key: str, raw: str) -> Any:
    try:
        return read_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {_short(item)}: {key}: expected a YAML value, got {_short(raw)} "
                          f"({yaml_problem(exc)}); quote a string: {key}='\"...\"'") from None


def load_config(path: Path, overrides: list[str] | None = None) -> Config:
    """Read params.yaml (safe_load), apply overrides, validate."""
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data or {}, overrides or [])
    return parse_config(data, origin=str(path) + (" with --set" if overrides else ""))


def params_hash(section: BaseModel | dict[str, Any]) -> str:
    """Stable short hash of a config section (or mapping)."""
    data = section.model_dump(mode="json", by_alias=True) if isinstance(section, BaseModel) else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def default_params_yaml() -> str:
    """The params.yaml a new workspace starts with: every key at its default."""
    header = "# Evergreen params: one section per stage. Override one run with --set sec.key=val.\n"
    return header + yaml.safe_dump(Config().to_params(), sort_keys=False)
