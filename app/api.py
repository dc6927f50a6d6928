"""`evergreen api`: the champion over HTTP (FastAPI on uvicorn, both already in Prefect's
dependencies). POST /predict takes one or many images (multipart files, or JSON base64),
decoded by the ingest decoder with its limits, and answers class probabilities, a prediction id
per image and the version that answered. Concurrent requests share forward passes (dynamic
batching, serve.max_batch and serve.max_wait_ms). The registry is polled: a new champion is
loaded whole, then swapped in at a batch boundary, so no request fails or mixes versions.
GET /health and GET /metrics (Prometheus text) watch it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves route annotations here

from evergreen.config import IngestConfig, ServeConfig
from evergreen.workspace import Workspace

log = logging.getLogger("evergreen.api")


class Champion:
    """The model serving now; replaced whole when the registry names another champion."""

    def __init__(self, ws: Workspace, threads: int):
        self.ws, self.threads = ws, threads
        self.current = None  # tasks.serve.ServedModel
        self.stamp = None

    def refresh(self) -> bool:
        """Load the registry's champion if it changed (call off the event loop); True if swapped."""
        from mains.versions import load_registry
        from tasks.serve import ServedModel

        try:
            info = self.ws.registry.stat()
        except FileNotFoundError:
            return False
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self.stamp:
            return False
        registry = load_registry(self.ws.registry)
        self.stamp, version = stamp, registry["champion"]
        if version is None or (self.current and self.current.version == version):
            return False
        path = self.ws.root / registry["versions"][version]["path"]
        self.current = ServedModel.load(version, path, self.threads)  # one reference swap
        log.info("api: serving %s (%s)", version, self.current.runtime)
        return True

    def infer(self, x):
        """(probabilities, version) from one model, whatever swaps meanwhile."""
        model = self.current
        return model.predict(x), model.version


def create_app(ws: Workspace, serve: ServeConfig, ingest: IngestConfig, batching: bool = True):
    """The ASGI app; `batching=False` runs one forward pass per request (the naive handler the
    load benchmark compares against)."""
    import os

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from app.api_metrics import ApiMetrics
    from tasks.serve import DynamicBatcher, RequestError

    threads = serve.threads or len(os.sched_getaffinity(0))
    champion, metrics = Champion(ws, threads), ApiMetrics(serve.max_batch)
    batcher = DynamicBatcher(champion.infer, serve.max_batch, serve.max_wait_ms / 1000,
                             metrics.batch_size.observe)

    async def watch_registry() -> None:
        while True:
            await asyncio.sleep(serve.reload_poll_s)
            try:
                if await run_in_threadpool(champion.refresh):
                    metrics.model(champion.current.version)
            except Exception as exc:  # a registry mid-write or a bad version: keep serving
                log.warning("api: champion not reloaded: %s", exc)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await run_in_threadpool(champion.refresh)
        if champion.current:
            metrics.model(champion.current.version)
        watcher = asyncio.create_task(watch_registry())
        yield
        watcher.cancel()
        await batcher.close()

    app = FastAPI(title="evergreen", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        metrics.requests.labels(request.url.path, str(exc.status)).inc()
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/health")
    async def health():
        model = champion.current
        if model is None:
            return JSONResponse({"status": "no champion", "workspace": str(ws.root)}, 503)
        return {"status": "ok", "version": model.version, "runtime": model.runtime,
                "classes": model.card["classes"], "in_shape": list(model.in_shape)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        model = champion.current
        if model is None:
            raise RequestError(503, f"no champion in {ws.registry}; run `evergreen run` first")
        parts = await request_parts(request, serve)
        x = await run_in_threadpool(decode, parts, model.in_shape, ingest, serve.max_images_per_request)
        if batching:
            proba, version = await batcher(x)
        else:
            metrics.batch_size.observe(len(x))
            proba, version = await run_in_threadpool(champion.infer, x)
        classes = champion_classes(champion, version, model)
        metrics.requests.labels("/predict", "200").inc()
        metrics.latency.observe(time.perf_counter() - start)
        return {"version": version, "predictions": [
            {"id": uuid.uuid4().hex, "class": classes[int(row.argmax())],
             "probability": round(float(row.max()), 6),
             "probabilities": {c: round(float(v), 6) for c, v in zip(classes, row, strict=True)}}
            for row in proba]}

    return app


def decode(parts, in_shape, ingest: IngestConfig, max_images: int):
    from tasks.serve import decode_images

    return decode_images(parts, in_shape, ingest, max_images)


def champion_classes(champion: Champion, version: str, asked) -> list[str]:
    """The class names of the version that answered (a swap may fall between decode and answer)."""
    current = champion.current
    return (current if current.version == version else asked).card["classes"]


async def request_parts(request, serve: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a multipart or JSON body, read within max_request_bytes."""
    import json

    from tasks.serve import RequestError
    from tasks.serve.requests import base64_parts

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > serve.max_request_bytes:
        raise RequestError(413, f"body of {declared} bytes, more than serve.max_request_bytes "
                                f"{serve.max_request_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > serve.max_request_bytes:
            raise RequestError(413, f"body past serve.max_request_bytes {serve.max_request_bytes}")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            return base64_parts(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "body is not valid JSON") from None
    if kind == "multipart/form-data":
        return await multipart_parts(request, bytes(body), serve)
    raise RequestError(415, f"content type {kind or 'none'}: send multipart/form-data (field "
                            "'file') or application/json ('images': [base64, ...])")


async def multipart_parts(request, body: bytes, serve: ServeConfig) -> list[tuple[str, bytes]]:
    """The file parts of a multipart body already read (at most max_images_per_request + 1)."""
    from starlette.datastructures import UploadFile

    from tasks.serve import RequestError

    request._body = body  # starlette's cache of the body: form() parses it, no second read
    try:
        form = await request.form(max_files=serve.max_images_per_request + 1, max_fields=16)
    except Exception as exc:  # python-multipart's and starlette's parse errors
        raise RequestError(400, f"malformed multipart body: {type(exc).__name__}") from None
    parts = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            parts.append((Path(value.filename or key).name or key, await value.read()))
    return parts


def run_api(ws: Workspace, serve: ServeConfig, ingest: IngestConfig, host: str, port: int) -> int:
    """Serve until interrupted."""
    import uvicorn

    print(f"evergreen api: serving {ws.root}'s champion on http://{host}:{port} "
          "(POST /predict, GET /health, GET /metrics)", flush=True)
    uvicorn.run(create_app(ws, serve, ingest), host=host, port=port, log_level="warning",
                access_log=False)
    return 0
