"""One line per failed expectation: the column, what was observed, what was expected."""

from __future__ import annotations

from evergreen.config import ValidateConfig


def _failure_line(r: dict, notes: dict[str, str] | None = None) -> str:
    """'expectation(column): observed, expected' for one failed GX result, plus its note."""
    kwargs, res = r["expectation_config"]["kwargs"], r["result"]
    column = kwargs.get("column")
    name = r["expectation_config"]["type"] + (f"({column})" if column else "")
    error = _exception_message(r["exception_info"])
    if error:
        return f"{name}: raised {error}"
    if name.startswith("expect_column_values_to_not_be_null"):
        return f"{name}: {res['unexpected_count']} null values in {res['element_count']} rows"
    if "unexpected_count" in res:
        examples = list(dict.fromkeys(res.get("partial_unexpected_list", [])))[:5]
        observed = f"{res['unexpected_count']} unexpected values, e.g. {examples}"
    elif "mismatched" in res.get("details", {}):
        observed = f"missing columns {res['details']['mismatched'].get('missing', [])}"
    else:
        observed = f"observed {res.get('observed_value')}"
    return f"{name}: {observed}{_expected(kwargs)}{(notes or {}).get(name, '')}"


def _expected(kwargs: dict) -> str:
    """', expected >= a and <= b' from an expectation's bounds ('' when it has none)."""
    ops = (("min_value", ">="), ("max_value", "<="))
    bounds = [f"{op} {kwargs[k]}" for k, op in ops if kwargs.get(k) is not None]
    return f", expected {' and '.join(bounds)}" if bounds else ""


def _exception_message(info: dict) -> str | None:
    """The message of an exception GX caught while computing a result, if any."""
    # GX nests the info under metric ids when a metric raised, and keeps it flat otherwise.
    for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if entry.get("raised_exception"):
            return entry.get("exception_message")
    return None


def _sample_failure_lines(result: dict, notes: dict[str, str]) -> list[str]:
    """One line per failed sample expectation, with the note kept for its name, if any."""
    return [_failure_line(r, notes) for r in result["results"] if not r["success"]]


def _class_failure_lines(result: dict, cfg: ValidateConfig, max_count: int) -> list[str]:
    """One line per class that has too few samples or is too rare next to the largest class."""
    lines = []
    for r in (r for r in result["results"] if not r["success"]):
        column = r["expectation_config"]["kwargs"]["column"]
        rows = r["result"].get("unexpected_index_list")
        if _exception_message(r["exception_info"]) or not rows:
            lines.append(_failure_line(r))
        for row in rows or []:
            label, count = row["label"], row["count"]
            if column == "count":
                lines.append(
                    f"min samples per class: class '{label}' has {count} samples, "
                    f"expected >= {cfg.min_samples_per_class}"
                )
            else:
                ratio = f"{max_count / count:.2f}x" if count else "inf"
                lines.append(
                    f"max class imbalance: class '{label}' has {count} samples vs {max_count} in "
                    f"the largest class ({ratio}), expected <= {cfg.max_class_imbalance}x"
                )
    return lines
