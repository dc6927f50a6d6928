"""The compression report: Pareto front of accuracy vs latency, as a plot and a markdown table."""

from __future__ import annotations


def pareto_front(rows: list[dict]) -> set[str]:
    """Names of the variants no other variant beats on both accuracy and latency."""
    def beaten(r: dict) -> bool:
        return any(o["accuracy"] >= r["accuracy"] and o["latency_ms_p50"] <= r["latency_ms_p50"]
                   and (o["accuracy"], o["latency_ms_p50"]) != (r["accuracy"], r["latency_ms_p50"])
                   for o in rows)
    return {r["name"] for r in rows if not beaten(r)}


def pareto_png(rows: list[dict], selected: str | None) -> bytes:
    """Test accuracy vs batch-1 latency; marker area grows with file size; the front is joined."""
    from tasks.plots import figure_png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    biggest = max(r["size_bytes"] for r in rows)
    for r in rows:
        ax.scatter(r["latency_ms_p50"], r["accuracy"], s=30 + 600 * r["size_bytes"] / biggest,
                   alpha=0.6, edgecolors="black" if r["name"] == selected else "none",
                   linewidths=2, color="tab:red" if r.get("int8") else "tab:blue")
        ax.annotate(f"{r['name']} ({r['size_bytes'] / 1024:.0f} KB)",
                    (r["latency_ms_p50"], r["accuracy"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    front = sorted((r for r in rows if r["name"] in pareto_front(rows)),
                   key=lambda r: r["latency_ms_p50"])
    ax.plot([r["latency_ms_p50"] for r in front], [r["accuracy"] for r in front], "--",
            color="gray", label="Pareto front")
    ax.set_xlabel("batch-1 latency p50, onnxruntime (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"compression variants (red: int8; outlined: selected {selected or 'none'})")
    ax.legend(loc="lower right")
    return figure_png(fig)


def pareto_markdown(report: dict) -> str:
    """The variants table with the selection and its reason, for the Prefect UI."""
    front = pareto_front(report["variants"])
    lines = ["# Compression variants", "", f"**selected: {report['selected'] or 'none'}** — "
             f"{report['reason']}", "",
             "| variant | method | accuracy | F1 | p50 ms | p95 ms | KB | params | fits | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["variants"]:
        lines.append(f"| {r['name']} | {r['method']} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | "
                     f"{r['latency_ms_p50']:.3f} | {r['latency_ms_p95']:.3f} | "
                     f"{r['size_bytes'] / 1024:.1f} | {r['params'] or '—'} | "
                     f"{'yes' if r['fits'] else 'no'} | {'yes' if r['name'] in front else ''} |")
    gain = report.get("distillation_gain")
    if gain:
        lines += ["", f"Distillation gain over the no-distillation control: {gain['gain']:+.4f} "
                      f"(distilled {gain['distilled']:.4f}, control {gain['control']:.4f})"]
    lines += [f"- skipped {k}: {v}" for k, v in report.get("skipped", {}).items()]
    return "\n".join(lines)
