"""`evergreen api`: the champion over HTTP (FastAPI on uvicorn, both already in Prefect's
dependencies). POST /predict takes one or many images (multipart files, JSON base64, one image
as the body, or a .npy array of them), decoded by the ingest decoder with its limits, and
answers class probabilities, a prediction id per image and the version that answered.
Concurrent requests share forward passes (dynamic batching, serve.max_batch and
serve.max_wait_ms). The registry is polled: a new champion is loaded whole, then swapped in at
a batch boundary, so no request fails or mixes versions.
POST /feedback labels a served input (batches of them go to the drop folder); every
serve.drift_window served inputs are tested for drift. GET /health and GET /metrics
(Prometheus text) watch it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves route annotations here

from evergreen.config import Config, ServeConfig
from evergreen.workspace import Workspace

log = logging.getLogger("evergreen.api")
INLINE_DECODE_BYTES = 65_536  # request bodies up to this decode on the event loop
FEEDBACK_BYTES = 65_536  # a feedback body is an id and a label
REPORT_EVERY_S = 1.0  # windows of one verdict go to reports/serving.json at most this often
PUBLISH_BACKLOG = 64  # drift windows waiting for Prefect; more are not published (still reported)


def create_app(ws: Workspace, cfg: Config, batching: bool = True, on_window=None):
    """The ASGI app for `cfg` (its serve, ingest, validate and watch sections). `batching=False`
    runs one forward pass per request (the naive handler the load benchmark compares with);
    `on_window(window)` is called off the event loop for each closed drift window (default:
    app/api_state.Publisher, the Prefect flow run and artifact, and the event if drifted)."""
    import orjson
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from app.api_metrics import ApiMetrics
    from app.api_state import Champion, Publisher, write_report
    from tasks.serve import DynamicBatcher, FeedbackError, FeedbackStore, RequestError

    # a malformed multipart body is the client's 400, not a server warning on every request
    logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
    serve = cfg.serve
    threads = serve.threads or max(1, len(os.sched_getaffinity(0)) // serve.passes)
    champion = Champion(ws, threads, serve.drift_reference)
    metrics = ApiMetrics(serve.max_batch)
    batcher = DynamicBatcher(champion.infer, serve.max_batch, serve.max_wait_ms / 1000,
                             metrics.batch_size.observe, serve.passes)
    feedback = FeedbackStore(ws.batches.parent / "feedback" / "pending",
                             ws.root / serve.feedback_folder, serve.feedback_batch,
                             serve.keep_served, cfg.watch.marker, serve.keep_served_mb << 20)
    drift = Drift(ws, cfg, champion, metrics, on_window or Publisher(ws))

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
        drift.publisher.shutdown(wait=False)

    app = FastAPI(title="evergreen", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestError)
    @app.exception_handler(FeedbackError)
    async def refused(request: Request, exc: RequestError | FeedbackError):
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
        x = await request_images(request, model.in_shape, cfg)
        if batching:
            proba, answered = await batcher(x)
        else:
            metrics.batch_size.observe(len(x))
            proba, answered = await run_in_threadpool(champion.infer, x)
        # the model that answered, not the one serving now: a swap may fall in between
        version, classes = answered.version, answered.card["classes"]
        ids = prediction_ids(len(x))
        predicted = [classes[i] for i in proba.argmax(1).tolist()]
        feedback.remember(ids, x)
        drift.add(x, predicted, version)
        metrics.requests.labels("/predict", "200").inc()
        metrics.latency.observe(time.perf_counter() - start)
        rounded = np.round(proba.astype(float), 6).tolist()
        return Response(orjson.dumps({"version": version, "predictions": [
            {"id": i, "class": top, "probability": max(row),
             "probabilities": dict(zip(classes, row, strict=True))}
            for i, top, row in zip(ids, predicted, rounded, strict=True)]}),
            media_type="application/json")

    @app.post("/feedback")
    async def label(request: Request):
        try:
            body = orjson.loads(await read_body(request, FEEDBACK_BYTES, serve.body_timeout_s))
            prediction_id, label = body["prediction_id"], body["label"]
        except (ValueError, KeyError, TypeError):
            raise FeedbackError(400, "body must be JSON {\"prediction_id\": ..., \"label\": ...}") \
                from None
        dropped = await run_in_threadpool(feedback.label, str(prediction_id), label)
        metrics.feedback.inc()
        if dropped is not None:
            log.info("api: feedback batch dropped in %s", dropped)
            metrics.feedback_batches.inc()
        write_report(ws, feedback={"pending": feedback.labelled, "batches": feedback.dropped,
                                   "folder": str(feedback.drop)})
        metrics.requests.labels("/feedback", "200").inc()
        return {"recorded": True, "pending": feedback.labelled,
                "batch": str(dropped) if dropped else None}

    return app


class Drift:
    """Served inputs to tumbling drift windows against the serving champion's reference; each
    window to the metrics and the publisher, to the report when its verdict changes (else once a
    second)."""

    def __init__(self, ws: Workspace, cfg: Config, champion, metrics, on_window):
        self.ws, self.cfg, self.champion, self.metrics = ws, cfg, champion, metrics
        self.on_window, self.monitor = on_window, None
        self.written, self.drifted = float("-inf"), False  # the report's last window: when, verdict
        # one thread publishes, in order (a thread per window cost more than its test), with at
        # most PUBLISH_BACKLOG windows waiting
        self.publisher = ThreadPoolExecutor(1, thread_name_prefix="evergreen-drift")
        self.backlog = threading.BoundedSemaphore(PUBLISH_BACKLOG)

    def add(self, x, predicted: list[str], version: str) -> None:
        from tasks.serve import DriftMonitor, pixel_means

        reference = self.champion.reference
        if reference is None or reference.version != version:
            return  # inputs answered by a model swapped out meanwhile
        if self.monitor is None or self.monitor.reference is not reference:  # a new champion
            self.monitor = DriftMonitor(reference, self.cfg.serve.drift_window,
                                        self.cfg.validate_.max_pixel_psi,
                                        self.cfg.validate_.min_label_shift_pvalue)
        window = self.monitor.add(pixel_means(x), predicted)
        if window is not None:
            self.closed(window)

    def closed(self, window: dict) -> None:
        from app.api_state import write_report

        self.metrics.drift(window)
        # under heavy load windows close tens of times a second: the report and the log take
        # every change of verdict at once, else one window a second
        now, drifted = time.monotonic(), window["drifted"]
        if drifted != self.drifted or now - self.written >= REPORT_EVERY_S:
            write_report(self.ws, drift=window)
            self.written, self.drifted = now, drifted
            if drifted:
                log.warning("api: drift in the last %d served inputs: %s", window["samples"],
                            "; ".join(window["reasons"]))
        if self.backlog.acquire(blocking=False):  # a slow Prefect server: windows past it skip it
            self.publisher.submit(self.publish, window)

    def publish(self, window: dict) -> None:
        try:
            self.on_window(window)
        except Exception as exc:  # the server goes on; the report holds the window
            log.warning("api: drift window not published: %s", exc)
        finally:
            self.backlog.release()


def prediction_ids(n: int) -> list[str]:
    """n random 128-bit ids as 32 hex digits (one urandom call: uuid4 per image costs more
    than the forward pass of a small model)."""
    digits = os.urandom(16 * n).hex()
    return [digits[32 * i:32 * i + 32] for i in range(n)]


async def request_images(request, in_shape: tuple[int, int, int], cfg: Config) -> np.ndarray:
    """uint8 (N, C, H, W) images in the model's shape from a multipart, JSON, raw image or .npy
    body, read within max_request_bytes; small bodies decode on the event loop (a thread hop
    costs more), large ones off it."""
    from starlette.concurrency import run_in_threadpool

    from tasks.serve import decode_array, decode_images

    serve = cfg.serve
    body = await read_body(request, serve.max_request_bytes, serve.body_timeout_s)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-npy":  # images already decoded: no per-image work
        decode, data = decode_array, body
    else:
        decode, data = decode_images, await request_parts(request, kind, body, serve)
    args = (data, in_shape, cfg.ingest, serve.max_images_per_request)
    inline = len(body) <= INLINE_DECODE_BYTES
    return decode(*args) if inline else await run_in_threadpool(decode, *args)


async def request_parts(request, kind: str, body: bytes, serve: ServeConfig) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a multipart, JSON or raw image body."""
    import orjson

    from tasks.serve import RequestError
    from tasks.serve.requests import base64_parts

    if kind == "application/json":
        try:
            return base64_parts(orjson.loads(body))  # nesting past 1,024 is a decode error
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "body is not valid JSON") from None
    if kind == "multipart/form-data":
        return await multipart_parts(request, body, serve)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [("body", body)]  # one image as the raw body: no multipart parsing
    raise RequestError(415, f"content type {kind or 'none'}: send multipart/form-data (field "
                            "'file'), application/json ('images': [base64, ...]), one image "
                            "as the body (image/*) or an array of images (application/x-npy)")


async def read_body(request, limit: int, timeout_s: float) -> bytes:
    """The body, refused past `limit` bytes (413: from its declared length, or as it streams)
    or when not received whole within `timeout_s` (408)."""
    from tasks.serve import RequestError

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {declared} bytes, more than the limit of {limit} "
                                "(serve.max_request_bytes for /predict)")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise RequestError(413, f"body past the limit of {limit} bytes")
    except TimeoutError:
        raise RequestError(408, f"body not received whole within {timeout_s:g} s "
                                f"(serve.body_timeout_s); {len(body)} bytes came") from None
    return bytes(body)


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


def run_api(ws: Workspace, cfg: Config, host: str, port: int, batching: bool = True) -> int:
    """Serve until interrupted."""
    import uvicorn

    print(f"evergreen api: serving {ws.root}'s champion on http://{host}:{port} "
          "(POST /predict, POST /feedback, GET /health, GET /metrics)", flush=True)
    uvicorn.Server(server_config(create_app(ws, cfg, batching), cfg.serve, host, port)).run()
    return 0


def server_config(app, serve: ServeConfig, host: str, port: int):
    """uvicorn's settings for `app`: quiet, past serve.max_connections a 503."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          limit_concurrency=serve.max_connections)
