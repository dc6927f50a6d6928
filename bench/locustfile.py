"""The load the serving benchmark puts on `evergreen api`: closed-loop users, each posting
EVERGREEN_BENCH_PER_REQUEST PNGs (from the folder EVERGREEN_BENCH_IMAGES) back to back. A reply
that is not 200 or names no version counts as a failure. Run by bench/serving.py, as its own
process (locust patches the standard library with gevent)."""

import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

IMAGES = [p.read_bytes() for p in sorted(Path(os.environ["EVERGREEN_BENCH_IMAGES"]).glob("*.png"))]
PER_REQUEST = int(os.environ.get("EVERGREEN_BENCH_PER_REQUEST", "1"))
RAW = os.environ.get("EVERGREEN_BENCH_RAW") == "1"  # the body is the PNG itself, not multipart
VERSIONS = set(filter(None, os.environ.get("EVERGREEN_BENCH_VERSIONS", "").split(",")))


class Client(FastHttpUser):  # geventhttpclient: the load costs the server's cores less
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        if RAW:  # one image as the body
            request = {"data": random.choice(IMAGES), "headers": {"content-type": "image/png"}}
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
