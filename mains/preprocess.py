"""preprocess's main: the landed batches to train/val/test splits in data/processed."""

from __future__ import annotations

from evergreen.config import PreprocessConfig
from evergreen.workspace import Workspace
from mains.processed import save_processed


def run_preprocess(ws: Workspace, section: PreprocessConfig) -> dict:
    """Deduplicate, split by content hash, normalization statistics."""
    from tasks.ingest import read_batches
    from tasks.preprocess import preprocess

    processed = preprocess(*read_batches(ws.batches), section)
    save_processed(ws, processed)
    return processed.info
