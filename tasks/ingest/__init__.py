"""Ingest: read a source safely into a packed, content-addressed batch plus per-sample metadata.

The public API; each name lives in the module that owns it (ARCHITECTURE.md, "A reader").
"""

from tasks.ingest.batches import (
    META_COLUMNS,
    TEXT_COLUMNS,
    Candidate,
    batch_id_of,
    content_hash,
    dataset_shape,
    dedupe,
    has_samples,
    land_batch,
    metadata_csv,
    metadata_table,
    pack_shard,
    prepare_batch,
    private_folder,
    quarantine_candidate,
    quarantine_source,
    read_batches,
    read_labelled,
    read_metadata,
    shown_source,
    write_batch,
)
from tasks.ingest.predict_input import Input, collect_inputs, load_inputs
from tasks.ingest.reading import Batch, Names, Reading, ReadLog, Rejected, Shape, canonical_labels
from tasks.ingest.safe_files import Opened, SourceFiles, csv_cell, display_name, from_csv_cell
from tasks.ingest.source import Read, load_digits_batch, read_idx, read_source

__all__ = [
    "META_COLUMNS", "TEXT_COLUMNS", "Batch", "Candidate", "Input", "Names", "Opened", "Read",
    "ReadLog", "Reading", "Rejected", "Shape", "SourceFiles", "batch_id_of", "canonical_labels",
    "collect_inputs", "content_hash", "csv_cell", "dataset_shape", "dedupe", "display_name",
    "from_csv_cell", "has_samples", "land_batch", "load_digits_batch", "load_inputs",
    "metadata_csv", "metadata_table", "pack_shard", "prepare_batch", "private_folder",
    "quarantine_candidate", "quarantine_source", "read_batches", "read_idx", "read_labelled",
    "read_metadata", "read_source", "shown_source", "write_batch",
]
