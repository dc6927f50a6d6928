"""preprocess's main: the landed batches to the train/val/test index in data/processed."""

from __future__ import annotations

from evergreen.config import PreprocessConfig
from evergreen.workspace import Workspace
from mains.processed import save_processed


def run_preprocess(ws: Workspace, section: PreprocessConfig) -> dict:
    """Deduplicate, split by content hash, normalization statistics; batches landed before
    sharded storage are migrated first."""
    from tasks.ingest import migrate_batches, read_batches
    from tasks.preprocess import preprocess

    migrate_batches(ws.batches)
    processed = preprocess(*read_batches(ws.batches), section)
    save_processed(ws, processed)
    return processed.info
