"""Serving the champion: the model as served (onnxruntime, numpy in and out), request bodies
decoded by the ingest decoder with its limits, dynamic batching of concurrent requests, live
drift of served inputs and feedback labels. No HTTP here: app/api.py wires these into routes."""

from tasks.serve.batcher import DynamicBatcher
from tasks.serve.drift import DriftMonitor, DriftReference, pixel_means, window_report
from tasks.serve.feedback import FeedbackError, FeedbackStore
from tasks.serve.model import ServedModel
from tasks.serve.requests import RequestError, decode_array, decode_images

__all__ = ["DriftMonitor", "DriftReference", "DynamicBatcher", "FeedbackError", "FeedbackStore",
           "RequestError", "ServedModel", "decode_array", "decode_images", "pixel_means", "window_report"]
