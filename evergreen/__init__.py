"""Evergreen: a workflow-orchestrated ML pipeline for image models."""

__version__ = "0.1.0"
