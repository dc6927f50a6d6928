"""Ingest: read a source safely into a packed, content-addressed batch plus per-sample metadata.

The package's public API, re-exported from the module that owns each name:
source (read_source, read_idx, read_labelled: the entry points, dispatching to one reader per
format: idx, npz, csv_table, folder with labels_csv and decode; archives through archive),
reading (Batch, ReadLog, Rejected), names, safe_files, batches (the dataset's shards and
metadata, migration from packed .npz batches), quarantine, and predict_input (images to score
with the champion).
"""

from tasks.ingest.batches import (
    META_COLUMNS,
    TEXT_COLUMNS,
    Candidate,
    batch_id_of,
    batch_images,
    content_hash,
    dataset_shape,
    dedupe,
    has_samples,
    land_batch,
    metadata_csv,
    metadata_table,
    migrate_batches,
    prepare_batch,
    read_batches,
    read_metadata,
    write_batch,
)
from tasks.ingest.names import Names, csv_cell, display_name, from_csv_cell
from tasks.ingest.predict_input import Input, collect_inputs, load_inputs
from tasks.ingest.quarantine import private_folder, quarantine_candidate, quarantine_source, shown_source
from tasks.ingest.reading import Batch, Read, Reading, ReadLog, Rejected, Shape
from tasks.ingest.safe_files import Opened, SourceFiles
from tasks.ingest.source import canonical_labels, load_digits_batch, read_idx, read_labelled, read_source
from tasks.ingest.staging import clear_staging

__all__ = [
    "META_COLUMNS", "TEXT_COLUMNS", "Batch", "Candidate", "Input", "Names", "Opened", "Read",
    "ReadLog", "Reading", "Rejected", "Shape", "SourceFiles", "batch_id_of", "batch_images",
    "canonical_labels", "clear_staging",
    "collect_inputs", "content_hash", "csv_cell", "dataset_shape", "dedupe", "display_name",
    "from_csv_cell", "has_samples", "land_batch", "load_digits_batch", "load_inputs",
    "metadata_csv", "metadata_table", "migrate_batches", "prepare_batch", "private_folder",
    "quarantine_candidate", "quarantine_source", "read_batches", "read_idx", "read_labelled",
    "read_metadata", "read_source", "shown_source", "write_batch",
]
