"""`evergreen api` under load (locust, loopback only), on the pipeline benchmark's digits
champion: latency percentiles and throughput at 1, 8, 32 and 128 closed-loop clients with
dynamic batching and with the naive handler (one forward pass per request) of the same stack,
side by side; saturation with 64 PNGs, one raw PNG or 256 decoded images (.npy) per request
against the model's offline batch-256 throughput in onnxruntime, the ceiling; the
champion swapped 10 times during a load run (no failed request, every reply names a version);
and 10,000 random byte strings with bombs, EPS, truncated and oversized bodies (each a 4xx, the
server's peak memory before and after).
The server, locust and this process each run alone: locust patches the standard library."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.report import entry, not_run

CLIENTS = (1, 8, 32, 128)
RAW_KINDS = ["image/png", "application/x-npy", "application/json"]  # bodies read without multipart


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiProcess:
    """`evergreen api` in its own process, on a free loopback port, until the block ends."""

    def __init__(self, ws: Path, batching: bool):
        self.port = free_port()
        cmd = [sys.executable, "-m", "app.cli", "--workspace", str(ws), "api", "--port",
               str(self.port)] + ([] if batching else ["--no-batching"])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiProcess:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise RuntimeError(f"evergreen api exited: {self.proc.stderr.read().decode()[-500:]}")
        raise RuntimeError("evergreen api did not answer /health in 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def locust(url: str, users: int, seconds: float, images: Path, per_request: int = 1,
           versions: str = "", body: str = "multipart") -> dict:
    """One headless locust run: requests/s, images/s, p50/p95/p99 ms, failures (`body`:
    multipart PNGs, raw (one PNG as the body) or npy (the pixels as one array))."""
    with tempfile.TemporaryDirectory(prefix="evergreen-locust-") as tmp:
        env = {**os.environ, "EVERGREEN_BENCH_IMAGES": str(images),
               "EVERGREEN_BENCH_PER_REQUEST": str(per_request), "EVERGREEN_BENCH_VERSIONS": versions,
               "EVERGREEN_BENCH_BODY": body}
        cmd = [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
               "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds:.0f}s",
               "--host", url, "--csv", f"{tmp}/run", "--only-summary", "--loglevel", "WARNING",
               "--stop-timeout", "5"]
        subprocess.run(cmd, env=env, capture_output=True, timeout=seconds + 120)
        with open(f"{tmp}/run_stats.csv") as fh:
            row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    rps = float(row["Requests/s"])
    return {"clients": users, "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]), "requests_per_s": round(rps, 1),
            "images_per_s": round(rps * per_request, 1), "p50_ms": float(row["50%"]),
            "p95_ms": float(row["95%"]), "p99_ms": float(row["99%"])}


def offline_throughput(model_dir: Path, reps: int) -> float:
    """Images/s of the served path (normalize, onnxruntime, softmax) at batch 256, all cores,
    onnxruntime's defaults (threads spin between passes: its fastest alone)."""
    from tasks.serve import ServedModel

    model = ServedModel.load("bench", model_dir, len(os.sched_getaffinity(0)), spin=True)
    x = np.random.default_rng(0).integers(0, 256, (256, *model.in_shape), dtype=np.uint8)
    model.predict(x)
    start = time.perf_counter()
    for _ in range(reps):
        model.predict(x)
    return reps * len(x) / (time.perf_counter() - start)


def sample_pngs(ws: Path, folder: Path, n: int = 200) -> None:
    """n test images of the workspace as PNG files (what clients send)."""
    from PIL import Image

    from evergreen.workspace import Workspace
    from mains.processed import load_split

    x, _ = load_split(Workspace(ws), "test")
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x[:min(n, len(x))]):
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(folder / f"{i}.png")


def serving(quick: bool, scratch: Path) -> dict:
    from evergreen.workspace import Workspace
    from mains.versions import load_registry

    ws = scratch / "pipeline_ws"
    names = ("serving_batched_vs_naive_32", "serving_saturation_vs_offline",
             "serving_reload_failures", "serving_bad_requests_not_4xx")
    registry = ws / "models" / "registry.json"
    if not registry.exists() or not load_registry(Workspace(ws).registry)["champion"]:
        reason = "needs the champion of the pipeline_overhead benchmark's run, which did not finish"
        return {n: not_run(None, reason, error=True) for n in names}
    return measure(ws, scratch / "serving_images", 4.0 if quick else 15.0, quick)


def measure(ws: Path, images: Path, seconds: float, quick: bool) -> dict:
    """Every load run, then the entries (also `python -m bench.serving WORKSPACE`)."""
    from evergreen.workspace import Workspace
    from mains.versions import load_registry

    sample_pngs(ws, images)
    registry = load_registry(Workspace(ws).registry)
    champion_dir = ws / registry["versions"][registry["champion"]]["path"]
    offline = [offline_throughput(champion_dir, 20 if quick else 200)]
    runs = {"batched": [], "naive": []}
    for mode in runs:
        with ApiProcess(ws, batching=mode == "batched") as api:
            for users in CLIENTS:
                runs[mode].append(locust(api.url, users, seconds, images))
            if mode == "batched":
                many = {"multipart": locust(api.url, 32, seconds, images, per_request=64),
                        "raw": locust(api.url, 32, seconds, images, body="raw")}
                many |= {f"npy_{users}": locust(api.url, users, seconds, images, per_request=256,
                                                body="npy") for users in (8, 32)}
                peak = api.peak_rss_mb()
        # the ceiling again on the quiet machine: the best of the run's offline figures counts
        offline.append(offline_throughput(champion_dir, 20 if quick else 200))
    reload = reload_under_load(ws, images, 20.0 if quick else 60.0, 10)
    hostile = hostile_requests(ws, images, 1000 if quick else 10_000)
    return entries(runs, many, offline, reload, peak) | {"serving_bad_requests_not_4xx": entry(
        hostile["not_4xx"], "requests", f"{hostile['requests']} bad requests", "0",
        hostile["not_4xx"] == 0 and hostile["good_request_after"] == 200, **hostile)}


def entries(runs: dict, many: dict, offline: list[float], reload: dict, peak_mb: float) -> dict:
    """`many`: the batched server's saturation runs by body (64 PNGs multipart, one raw PNG,
    256 images as one .npy at 8 and 32 clients); `offline`: the ceiling, measured three times."""
    by = {mode: {r["clients"]: r for r in rows} for mode, rows in runs.items()}
    ratio32 = by["batched"][32]["requests_per_s"] / max(by["naive"][32]["requests_per_s"], 1e-9)
    ratio128 = by["batched"][128]["requests_per_s"] / max(by["naive"][128]["requests_per_s"], 1e-9)
    best = max([r["images_per_s"] for r in runs["batched"]] + [r["images_per_s"] for r in many.values()])
    ceiling = max(offline)
    anchor = f"offline batch-256 onnxruntime {ceiling:.0f} images/s (the ceiling, best of 3)"
    return {
        "serving_batched_vs_naive_32": entry(
            ratio32, "x", f"naive {by['naive'][32]['requests_per_s']} req/s", ">= 3x at 32+ clients",
            ratio32 >= 3 and ratio128 >= 3, ratio_128_clients=round(ratio128, 2), runs=runs,
            server_peak_rss_mb=round(peak_mb, 1)),
        "serving_saturation_vs_offline": entry(
            best / ceiling, "x", anchor, ">= 0.5 of offline", best / ceiling >= 0.5,
            single_image_best=max(r["images_per_s"] for r in runs["batched"]),
            single_image_vs_offline=round(max(r["images_per_s"] for r in runs["batched"]) / ceiling, 3),
            by_body=many, offline_images_per_s=[round(o, 1) for o in offline]),
        "serving_reload_failures": entry(
            reload["failures"], "requests", f"{reload['requests']} requests, {reload['swaps']} swaps",
            "0", reload["failures"] == 0 and reload["swaps"] == 10, **reload),
    }


def hostile_bodies(good: bytes, limit: int, n_random: int):
    """(name, body) of bad requests: each must get a 4xx. Random byte strings last."""
    import struct
    import zlib

    def png(width: int, height: int, idat: bytes) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", idat) + chunk(b"IEND", b""))

    yield "oversized body", b"\0" * (limit + 1)
    yield "header bomb (50,000 x 50,000)", png(50_000, 50_000, zlib.compress(b"\0" * 64))
    yield "pixel bomb (5,000 x 5,000 of zeros)", png(5000, 5000, zlib.compress(b"\0" * (5001 * 5000)))
    yield "truncated png", good[: len(good) // 2]
    yield "eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    yield "not an image", b"hello, world\n" * 100
    yield "json nested 100,000 deep", b"[" * 100_000
    yield "npy of Python objects", b"\x93NUMPY\x01\x00v\x00" + (
        b"{'descr': '|O', 'fortran_order': False, 'shape': (1, 8, 8), }").ljust(117) + b"\n"
    yield "npy header claiming 30,000 x 30,000", b"\x93NUMPY\x01\x00v\x00" + (
        b"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 30000, 30000), }").ljust(117) + b"\n"
    rng = np.random.default_rng(0)
    for i in range(n_random):
        yield f"random {i}", rng.bytes(int(rng.integers(0, 4096)))


def hostile_requests(ws: Path, images: Path, n_random: int) -> dict:
    """Every hostile body against a running server: status codes, and its peak RSS before and
    after (memory must stay bounded); the server must still answer a good request."""
    import httpx

    from evergreen.config import ServeConfig

    good = next(images.glob("*.png")).read_bytes()
    statuses, named = {}, {}
    with ApiProcess(ws, batching=True) as api, httpx.Client(base_url=api.url, timeout=60) as client:
        client.post("/predict", files=[("file", ("x.png", good, "image/png"))])
        before = api.peak_rss_mb()
        for i, (name, body) in enumerate(hostile_bodies(good, ServeConfig().max_request_bytes, n_random)):
            # every body as a multipart file; the named ones and every tenth random one also as
            # each raw content type the server reads
            kinds = [None] + (RAW_KINDS if not name.startswith("random") or i % 10 == 0 else [])
            for kind in kinds:
                reply = (client.post("/predict", content=body, headers={"content-type": kind}) if kind
                         else client.post("/predict", files=[("file", ("x", body, "image/png"))]))
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
                if not name.startswith("random") or not 400 <= reply.status_code < 500:
                    named[f"{name} ({kind or 'multipart'})"] = [reply.status_code, reply.text[:160]]
        still_up = client.post("/predict", files=[("file", ("x.png", good, "image/png"))]).status_code
        after = api.peak_rss_mb()
    bad = sum(k for code, k in statuses.items() if not 400 <= code < 500)
    return {"requests": sum(statuses.values()), "not_4xx": bad, "statuses": statuses,
            "named": named, "good_request_after": still_up,
            "peak_rss_mb_before": round(before, 1), "peak_rss_mb_after": round(after, 1)}


def reload_under_load(ws: Path, images: Path, seconds: float, swaps: int) -> dict:
    """A load run during which the champion moves `swaps` times (a second version and back)."""
    from evergreen.workspace import Workspace
    from mains.versions import load_registry, save_registry, store_version
    from nets.io import file_sha256, model_file
    from tasks.promote import switch_champion

    work = Workspace(ws)
    registry = load_registry(work.registry)
    first = registry["champion"]
    folders = [*sorted((ws / "models" / "variants").glob("*")), ws / "models" / "teacher"]
    other = next((p for p in folders if (p / "model.json").exists()
                  and file_sha256(model_file(p)) != registry["versions"][first]["sha256"]),
                 ws / registry["versions"][first]["path"])  # else the champion under a new name
    sha = file_sha256(model_file(other))
    second = store_version(registry, other, work.versions,
                           sha if sha != registry["versions"][first]["sha256"] else sha + "-copy")
    save_registry(work.registry, registry)
    result = {}
    with ApiProcess(ws, batching=True) as api:
        load = threading.Thread(target=lambda: result.update(
            locust(api.url, 32, seconds, images, versions=f"{first},{second}")))
        load.start()
        time.sleep(seconds / (swaps + 2))
        for i in range(swaps):
            target = second if i % 2 == 0 else first
            save_registry(work.registry, switch_champion(load_registry(work.registry), target,
                                                         "bench", "serving benchmark swap"))
            time.sleep(seconds / (swaps + 2))
        load.join()
    save_registry(work.registry, switch_champion(load_registry(work.registry), first, "bench",
                                                 "serving benchmark: back to the champion"))
    return {**result, "swaps": swaps, "versions": [first, second], "swapped_to": other.name}


if __name__ == "__main__":
    import json

    out = measure(Path(sys.argv[1]), Path(tempfile.mkdtemp(prefix="evergreen-serving-")),
                  float(sys.argv[2]) if len(sys.argv) > 2 else 15.0, quick=False)
    print(json.dumps(out, indent=1))
