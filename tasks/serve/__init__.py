"""Serving the champion: the model as served (onnxruntime, numpy in and out), request bodies
decoded by the ingest decoder with its limits, and dynamic batching of concurrent requests.
No HTTP here: app/api.py wires these into routes."""

from tasks.serve.batcher import DynamicBatcher
from tasks.serve.model import ServedModel
from tasks.serve.requests import RequestError, decode_images

__all__ = ["DynamicBatcher", "RequestError", "ServedModel", "decode_images"]
