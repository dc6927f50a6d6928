"""The serving-window flow: one drift window of `evergreen api` in the Prefect UI, as a flow run
holding its markdown artifact (figures, verdict, feedback counts)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact


@flow(name="serving-window", log_prints=False)
def serving_window(markdown: str, version: str) -> None:
    """Publish one drift window's figures (the api starts it; nothing else runs here)."""
    create_markdown_artifact(markdown, key="serving-drift", description=f"drift window on {version}")
