"""ingest's main: read a source, check it against the dataset, land it as a batch or
quarantine it; and the quarantine of a landed batch that a later check refuses."""

from __future__ import annotations

import logging
from pathlib import Path

from evergreen.config import IngestConfig, ValidateConfig
from evergreen.errors import BadInputError, DataValidationError
from evergreen.workspace import Workspace, atomic_write_bytes

log = logging.getLogger("evergreen.stages")


def shown(source: str | tuple[str, str]) -> str:
    from tasks.ingest import shown_source

    return shown_source(source)


def run_ingest(ws: Workspace, section: IngestConfig, validate: ValidateConfig,
               source: str | tuple[str, str] | None) -> dict:
    """Read, check and land `source` as a new batch, or quarantine it (exit 2).

    With no source, the default one (digits) is ingested if the dataset is empty.
    """
    import shutil

    from tasks.ingest import clear_staging, has_samples, migrate_batches

    migrate_batches(ws.batches, section.shard_mb)
    if source is None:
        if has_samples(ws.batches):
            return {"batch_id": None, "added": 0, "source": None}
        source = section.source
    staging = clear_staging(ws.batches.parent)  # a large folder's pixels, until landed
    try:
        return ingest_candidate(ws, section, validate, source, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ingest_candidate(ws: Workspace, section: IngestConfig, validate: ValidateConfig,
                     source: str | tuple[str, str], staging: Path) -> dict:
    """Read, check, then land or quarantine; a large image folder is staged under `staging`."""
    from tasks.ingest import land_batch, quarantine_candidate

    candidate = read_candidate(ws, section, source, staging)
    summary = {"source": shown(source), "batch_id": None, "added": 0, "read": len(candidate.batch)
               + candidate.duplicates, "already_present": candidate.present,
               "repeated_in_batch": candidate.repeats,
               "dropped": [vars(r) for r in candidate.rejected],
               "skipped": [vars(r) for r in candidate.log.skipped], "notes": candidate.log.notes}
    if len(candidate.batch) == 0:
        log.info("ingest %s: nothing new (%d samples already in the dataset)", shown(source),
                 candidate.duplicates)
        return summary
    report = check_batch(ws, validate, candidate)
    if not report.success:
        where = quarantine_candidate(candidate, report.failures, ws.quarantine)
        failed = "\n  ".join(report.failures)
        raise DataValidationError(f"{shown(source)}: batch {candidate.batch_id} failed validation:\n  "
                                  f"{failed}\nquarantined in {where}; the dataset is unchanged")
    land_batch(candidate, ws.batches, section.shard_mb)
    log.info("ingest %s: %d new samples (batch %s), %d repeated in the batch, %d already present, "
             "%d bad samples dropped", shown(source), len(candidate.batch), candidate.batch_id,
             candidate.repeats, candidate.present, len(candidate.rejected))
    for line in report.warnings:  # landed: the retrain, its label-noise screen and the gates decide
        log.warning("ingest %s: batch %s drifted (landed, validate.on_drift is warn): %s",
                    shown(source), candidate.batch_id, line)
    return {**summary, "batch_id": candidate.batch_id, "added": len(candidate.batch),
            "drift": report.warnings}


def read_candidate(ws: Workspace, section: IngestConfig, source: str | tuple[str, str],
                   staging: Path | None = None):
    """Read and deduplicate; unreadable sources and (by policy) bad samples are quarantined."""
    from tasks.ingest import ReadLog, prepare_batch, quarantine_candidate, quarantine_source

    log = ReadLog()
    try:
        candidate = prepare_batch(source, section, ws.batches, ws.root, log, staging)
    except BadInputError as exc:
        where = quarantine_source(source, str(exc), ws.quarantine, section.max_archive_bytes,
                                  log.opened)
        raise BadInputError(str(exc) + (f"\nthe files read are kept in {where}" if where else "")) \
            from None
    if candidate.rejected and section.on_bad_sample == "reject":
        reason = (f"{len(candidate.rejected)} bad samples and ingest.on_bad_sample is 'reject' "
                  "(set it to 'drop' to land the rest)")
        where = quarantine_candidate(candidate, [reason], ws.quarantine)
        listed = "\n  ".join(f"{r.source}: {r.reason}" for r in candidate.rejected[:20])
        more = len(candidate.rejected) - 20
        listed += f"\n  … and {more} more" if more > 0 else ""
        raise BadInputError(f"{shown(source)}: {reason}:\n  {listed}\n"
                            f"batch quarantined in {where}; the dataset is unchanged")
    return candidate


def check_batch(ws: Workspace, validate: ValidateConfig, candidate):
    """Per-sample and drift checks against the dataset; JSON and HTML reports under reports/."""
    from tasks.ingest import read_metadata
    from tasks.validate import render_html, validate_batch, write_report

    report = validate_batch(candidate.meta, read_metadata(ws.batches), validate,
                            candidate.duplicates)
    report.results["dropped"] = [vars(r) for r in candidate.rejected]
    out = ws.reports / "ingest" / candidate.batch_id
    write_report(report, out.with_suffix(".json"))
    atomic_write_bytes(out.with_suffix(".html"),
                       render_html(report, f"batch {candidate.batch_id} from {shown(candidate.source)}")
                       .encode())
    return report


def quarantine_batch(ws: Workspace, batch_id: str, reason: str) -> str:
    """Move a landed batch out of the dataset into data/quarantine/<id>/ with its reasons."""
    target = ws.quarantine / batch_id
    target.mkdir(parents=True, exist_ok=True)
    for path in [*ws.batches.glob(f"{batch_id}.*"), ws.batches / batch_id]:
        if path.exists():
            path.replace(target / path.name)
    atomic_write_bytes(target / "reasons.txt", (reason + "\n").encode())
    report = ws.reports / "validation.json"
    if report.exists():
        atomic_write_bytes(target / "validation.json", report.read_bytes())
    return str(target)
