"""The load the serving benchmark puts on `evergreen api`: closed-loop users, each posting
EVERGREEN_BENCH_PER_REQUEST images (PNGs from the folder EVERGREEN_BENCH_IMAGES) back to back,
as EVERGREEN_BENCH_BODY: multipart (default), raw (one PNG as the body) or npy (the decoded
pixels as one .npy array). A reply that is not 200 or names no version counts as a failure. Run
by bench/serving.py, as its own process (locust patches the standard library with gevent)."""

import io
import os
import random
from pathlib import Path

import numpy as np
from locust import FastHttpUser, constant, task
from PIL import Image

FILES = sorted(Path(os.environ["EVERGREEN_BENCH_IMAGES"]).glob("*.png"))
IMAGES = [p.read_bytes() for p in FILES]
PER_REQUEST = int(os.environ.get("EVERGREEN_BENCH_PER_REQUEST", "1"))
BODY = os.environ.get("EVERGREEN_BENCH_BODY", "multipart")
VERSIONS = set(filter(None, os.environ.get("EVERGREEN_BENCH_VERSIONS", "").split(",")))


def npy_bodies(k: int = 16) -> list[bytes]:
    """k .npy bodies of PER_REQUEST images each, drawn from the PNGs (built once)."""
    pixels = np.stack([np.asarray(Image.open(p)) for p in FILES])
    rng, bodies = np.random.default_rng(0), []
    for _ in range(k):
        buf = io.BytesIO()
        np.save(buf, pixels[rng.integers(0, len(pixels), PER_REQUEST)])
        bodies.append(buf.getvalue())
    return bodies


ARRAYS = npy_bodies() if BODY == "npy" else []


class Client(FastHttpUser):  # geventhttpclient: the load costs the server's cores less
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        if BODY == "raw":  # one image as the body
            request = {"data": random.choice(IMAGES), "headers": {"content-type": "image/png"}}
        elif BODY == "npy":
            request = {"data": random.choice(ARRAYS), "headers": {"content-type": "application/x-npy"}}
        else:
            request = {"files": [("file", (f"{i}.png", random.choice(IMAGES), "image/png"))
                                 for i in range(PER_REQUEST)]}
        with self.client.post("/predict", catch_response=True, **request) as reply:
            if reply.status_code != 200:
                reply.failure(f"status {reply.status_code}")
                return
            version = reply.json().get("version")
            if not version or (VERSIONS and version not in VERSIONS):
                reply.failure(f"answered by {version!r}")
