"""compress's main: build, export and measure the variants of the teacher, select one."""

from __future__ import annotations

import logging
from pathlib import Path

from evergreen.config import CompressConfig, SelectConfig, params_hash
from evergreen.workspace import Workspace, atomic_write_bytes, write_csv, write_json
from mains.processed import checkpoint_for, load_split

log = logging.getLogger("evergreen.stages")
PARITY_SAMPLES = 512  # val images each ONNX export is checked against its torch model on


class VariantShelf:
    """The variants built so far, exported once to models/variants and measured side by side."""

    def __init__(self, out: Path, val, test, select: SelectConfig):
        import shutil

        self.out, self.val, self.test, self.select = out, val, test, select
        self.variants, self.exports = {}, {}
        shutil.rmtree(out, ignore_errors=True)

    def add(self, variants: dict, check) -> None:
        from tasks.compress import save_variant

        for name, variant in variants.items():
            self.exports[name] = save_variant(variant, self.out / name, check)
        self.variants.update(variants)

    def rows(self) -> list[dict]:
        """Every variant's row, all timed again together (latency is only fair side by side)."""
        from tasks.compress import measure_variants

        measured = measure_variants(self.variants, self.out, self.val, self.test, self.select)
        return [{**measured[name], **self.exports[name]} for name in self.variants]


def run_compress(ws: Workspace, section: CompressConfig, candidate: str) -> dict:
    """Build, export and measure the variants round by round, mildest first, until one fits the
    budget (compress.build lazy); copy the selected one to models/selected."""
    from nets.io import file_sha256, load_model
    from tasks.compress import Inputs, calibration_batch, pruned_name, resolve_prune

    teacher, card = load_model(ws.model_dir("teacher"))
    teacher_sha = file_sha256(ws.model_dir("teacher") / "model.safetensors")
    ckpt, key = checkpoint_for(ws, "compress", params_hash(section), teacher_sha)
    train, val, test = (load_split(ws, name) for name in ("train", "val", "test"))
    ccfg, ratio_why = resolve_prune(section, card)
    inputs = Inputs(teacher, card, train, val, ckpt.parent, key, ratio_why)
    shelf = VariantShelf(ws.models / "variants", val, test, section.select)
    for ratio, why in ratio_why.items():
        log.info("compress: %s: %s", pruned_name(ratio), why)
    rows, selected, reason, skipped = build_until_one_fits(
        shelf, inputs, ccfg, candidate, calibration_batch(val, card, min(len(val[0]), PARITY_SAMPLES), 0))
    save_selection(ws, shelf.out, rows, selected, reason, section.select.fallback)
    write_report(ws, rows, selected, reason, skipped, section, ratio_why)
    trained = "distilled" in shelf.variants
    save_student(ws, shelf.variants, None if trained else skipped.get("distilled", "not built"))
    for path in ckpt.parent.glob("compress-*.pt"):
        path.unlink()
    return {"variants": len(rows), "selected": selected, "reason": reason,
            "student": "trained" if trained else "skipped"}


def build_until_one_fits(shelf: VariantShelf, inputs, ccfg: CompressConfig, candidate: str,
                         check) -> tuple[list[dict], str | None, str, dict[str, str]]:
    """The build rounds, mildest first; after each, every variant so far is measured and one
    selected; the rounds stop as compress.build says. Returns rows, selection, why, skipped."""
    from tasks.compress import (
        build_rounds,
        build_variants,
        building_stops,
        planned_names,
        select_variant,
    )

    skipped, stopped = {}, None
    for kinds, round_cfg in build_rounds(ccfg):
        if stopped is not None:
            skipped.update((name, stopped) for name in sorted(planned_names(kinds, round_cfg)))
            continue
        variants, failed = build_variants(inputs, round_cfg, kinds)
        shelf.add(variants, check)
        skipped.update(failed)
        rows = shelf.rows()
        selected, reason = select_variant(rows, ccfg.select)
        stopped = building_stops(ccfg, rows, candidate)
        if stopped is None:  # say why each round did not end the build, while it goes on
            log.info("compress: after building %s, %s", ", ".join(sorted(variants)), reason)
    if stopped is not None:
        log.info("compress: %s", stopped)
    log.info("compress: %s", reason)
    return rows, selected, reason, skipped


def write_report(ws: Workspace, rows: list[dict], selected: str | None, reason: str,
                 skipped: dict[str, str], section: CompressConfig, ratio_why: dict) -> None:
    """reports/compression.json and the Pareto figure."""
    from tasks.compress import distillation_gain, pruned_name
    from tasks.pareto import pareto_png

    write_json(ws.reports / "compression.json",
               {"variants": rows, "selected": selected, "reason": reason,
                "budget": section.select.model_dump(), "skipped": skipped,
                "prune_ratios": {pruned_name(r): why for r, why in ratio_why.items()},
                "distillation_gain": distillation_gain(rows)})
    atomic_write_bytes(ws.reports / "figures" / "pareto.png", pareto_png(rows, selected))


def save_selection(ws: Workspace, out: Path, rows: list[dict], selected: str | None,
                   reason: str, fallback: str) -> None:
    """models/selected: the chosen variant (or the teacher) with why, and whether the teacher
    may stand in for it (compress.select.fallback), so promote can judge it."""
    import shutil

    shutil.rmtree(ws.model_dir("selected"), ignore_errors=True)
    shutil.copytree(out / (selected or "teacher"), ws.model_dir("selected"))
    chosen = next(r for r in rows if r["name"] == (selected or "teacher"))
    write_json(ws.model_dir("selected") / "selection.json",
               {"variant": selected, "fits_budget": selected is not None, "reason": reason,
                "params": chosen["params"], "fallback": fallback})


def save_student(ws: Workspace, variants: dict, not_trained: str | None) -> None:
    """models/student: the distilled student, or a note of why none was trained; and the
    training curves of the student (or, without one, of the pruned fine-tunes)."""
    import shutil

    from nets.io import save_model
    from tasks.plots import history_png

    shutil.rmtree(ws.model_dir("student"), ignore_errors=True)
    if not_trained is None:
        student = variants["distilled"]
        save_model(student.model, student.card, ws.model_dir("student"))
        history, title = student.history, f"student ({student.card['arch']}, distilled)"
    else:
        write_json(ws.model_dir("student") / "skipped.json", {"reason": not_trained})
        tuned = next((v for v in variants.values() if v.history), None)  # the mildest pruning
        history = tuned.history if tuned else []
        title = f"{tuned.name} fine-tune (no student trained)" if tuned else "no training in compress"
    write_csv(ws.reports / "plots" / "compress.csv", history)
    atomic_write_bytes(ws.reports / "figures" / "compress_curves.png", history_png(history, title))
