"""Request bodies to uint8 images in the model's shape, through the ingest decoder and its
limits (formats Pillow may open, max_image_pixels from the header before decoding), or a .npy
array of images at the model's size, read as ingest reads an .npz's images. A bad body raises
RequestError with the HTTP status and a one-line message naming the part."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from evergreen.config import IngestConfig


class RequestError(Exception):
    """A request the server refuses: an HTTP status (4xx) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_images(parts: list[tuple[str, bytes]], in_shape: tuple[int, int, int],
                  cfg: IngestConfig, max_images: int) -> np.ndarray:
    """uint8 (N, C, H, W) for N (name, bytes) image parts; every part must decode."""
    from tasks.ingest.decode import DecodeError, Target, decode, probe

    if not parts:
        raise RequestError(400, "no image in the request (multipart field 'file' or JSON "
                                "'images': [base64, ...])")
    if len(parts) > max_images:
        raise RequestError(413, f"{len(parts)} images in one request, more than "
                                f"serve.max_images_per_request {max_images}")
    c, h, w = in_shape
    background = tuple(cfg.alpha_background)[:3]
    target = Target(c, (h, w), cfg.resize, background)
    out = np.empty((len(parts), c, h, w), np.uint8)
    for i, (name, body) in enumerate(parts):
        try:
            header = probe(io.BytesIO(body), cfg.max_image_pixels)
            arr, _ = decode(io.BytesIO(body), header, target)
        except DecodeError as exc:
            raise RequestError(422, f"{name}: {exc}") from None
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return out


def decode_array(body: bytes, in_shape: tuple[int, int, int], cfg: IngestConfig,
                 max_images: int) -> np.ndarray:
    """uint8 (N, C, H, W) from a .npy body (application/x-npy) of N images already at the
    model's size: (N, H, W), (N, H, W, C) or (N, C, H, W), integers 0..255 or floats 0..1 or
    0..255, read as ingest reads an .npz's images (no pickle, within its limits)."""
    from evergreen.errors import BadInputError
    from tasks.ingest.npz import read_npy_images

    try:
        x, reasons = read_npy_images(io.BytesIO(body), "images", cfg, "request body")
    except BadInputError as exc:
        raise RequestError(422, str(exc)) from None
    bad = next((i for i, r in enumerate(reasons) if r is not None), None)
    if bad is not None:
        raise RequestError(422, f"request body: image {bad}: {reasons[bad]}")
    if not len(x):
        raise RequestError(400, "request body: an array of no images")
    if len(x) > max_images:
        raise RequestError(413, f"{len(x)} images in one request, more than "
                                f"serve.max_images_per_request {max_images}")
    if x.shape[1:] != tuple(in_shape):
        c, h, w = in_shape
        raise RequestError(422, f"request body: images of shape {x.shape[1:]} (C, H, W); the "
                                f"model takes {c} channel(s) of {h}x{w}: send ({len(x)}, {h}, {w}"
                                f"{f', {c}' if c > 1 else ''}), or encoded images, which are resized")
    return x


def base64_parts(payload: object) -> list[tuple[str, bytes]]:
    """The images of a JSON body {"images": ["<base64>", ...]} (or "image": "<base64>")."""
    if not isinstance(payload, dict):
        raise RequestError(400, "JSON body must be an object with 'images': [base64, ...]")
    images = payload.get("images", [payload["image"]] if "image" in payload else None)
    if not isinstance(images, list) or not all(isinstance(v, str) for v in images):
        raise RequestError(400, "JSON field 'images' must be a list of base64 strings")
    parts = []
    for i, text in enumerate(images):
        try:
            parts.append((f"images[{i}]", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}]: not valid base64") from None
    return parts
