"""`evergreen api`: the champion over HTTP, on a real uvicorn server on loopback. Probabilities
match `evergreen predict`; concurrent requests share forward passes; bad requests get 4xx
with a message; a new champion is swapped in under load with no failed or mixed answer."""

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from evergreen.config import Config
from evergreen.workspace import read_json
from tests.app.hostile.helpers import png_bytes, png_claiming
from tests.conftest import TINY_PARAMS, copy_workspace


@pytest.fixture
def ws(champion_ws, tmp_path):
    return copy_workspace(champion_ws, tmp_path)


class Server:
    """create_app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, ws, on_window=None, **serve):
        import uvicorn

        from app.api import create_app

        cfg = Config.model_validate({**TINY_PARAMS, "serve": {"reload_poll_s": 0.05, **serve}})
        app = create_app(ws, cfg, on_window=on_window or (lambda window: None))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import httpx

        self.thread.start()
        deadline = time.time() + 30
        while not (self.server.started and self.server.servers):
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        return self

    def __exit__(self, *exc):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)

    def predict_files(self, images: list[bytes]):
        return self.client.post("/predict", files=[("file", (f"{i}.png", b, "image/png"))
                                                   for i, b in enumerate(images)])


def digit_pngs(digits, idx) -> list[bytes]:
    return [png_bytes(digits.x[i][0]) for i in idx]


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_predict_answers_probabilities_as_evergreen_predict_does(ws, digits, tmp_path):
    from app.printing import predict_paths

    idx = [1000, 1001, 1002]
    pngs = digit_pngs(digits, idx)
    for i, b in zip(idx, pngs, strict=True):
        (tmp_path / f"{i}.png").write_bytes(b)
    expected, _ = predict_paths(ws, [str(tmp_path / f"{i}.png") for i in idx])
    with Server(ws) as api:
        health = api.client.get("/health").json()
        assert health["status"] == "ok" and health["version"] == "v1"
        assert health["runtime"] == "onnxruntime"
        multipart = api.predict_files(pngs).json()
        b64 = api.client.post("/predict", json={"images": [base64.b64encode(b).decode()
                                                           for b in pngs]}).json()
        raw = api.client.post("/predict", content=pngs[0], headers={"content-type": "image/png"})
        assert raw.json()["predictions"][0]["probabilities"] == multipart["predictions"][0]["probabilities"]
        pixels = digits.x[idx]  # (3, 1, 8, 8) uint8: what the PNGs hold
        arrays = {"uint8 (N, H, W)": pixels[:, 0], "uint8 (N, H, W, 1)": pixels.transpose(0, 2, 3, 1),
                  "float 0..1 (N, C, H, W)": pixels.astype(np.float32) / 255}
        for name, array in arrays.items():
            answer = api.client.post("/predict", content=npy_bytes(array),
                                     headers={"content-type": "application/x-npy"}).json()
            assert [p["probabilities"] for p in answer["predictions"]] == \
                [p["probabilities"] for p in multipart["predictions"]], name
    for answer in (multipart, b64):
        assert answer.get("version") == "v1", answer
        assert answer["version"] == "v1" and len(answer["predictions"]) == 3
        for got, want in zip(answer["predictions"], expected, strict=True):
            assert got["class"] == want["class"]
            assert abs(sum(got["probabilities"].values()) - 1) < 1e-4
            for c, p in want["probabilities"].items():
                assert abs(got["probabilities"][c] - p) < 1e-4
    ids = [p["id"] for a in (multipart, b64) for p in a["predictions"]]
    assert len(set(ids)) == 6


def test_concurrent_requests_share_forward_passes(ws, digits):
    pngs = digit_pngs(digits, range(1000, 1064))
    with Server(ws, max_batch=64, max_wait_ms=50.0) as api:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda b: api.predict_files([b]), pngs))
        metrics = api.client.get("/metrics").text
    assert all(a.status_code == 200 for a in answers)
    passes = float(metric(metrics, "evergreen_batch_size_count"))
    images = float(metric(metrics, "evergreen_batch_size_sum"))
    assert images == 64 and passes < 32, (passes, images)  # 64 requests, far fewer passes
    assert 'evergreen_model_info{version="v1"} 1.0' in metrics
    assert float(metric(metrics, 'evergreen_requests_total{route="/predict",status="200"}')) == 64


def metric(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


def test_bad_requests_get_4xx_with_a_message_and_the_server_stays_up(ws, digits):
    rng = np.random.default_rng(0)
    good = digit_pngs(digits, [1000])[0]
    bodies = {"not an image": b"hello, world", "truncated png": good[:40],
              "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
              "header bomb": png_claiming(50_000, 50_000)}
    bodies |= {f"random {i}": rng.bytes(int(rng.integers(0, 400))) for i in range(200)}
    with Server(ws, max_request_bytes=100_000, max_images_per_request=4) as api:
        answers = {name: api.predict_files([body]) for name, body in bodies.items()}
        answers["too large"] = api.predict_files([b"\0" * 200_000])
        answers["too many"] = api.predict_files([good] * 5)
        answers["no image"] = api.client.post("/predict", json={"images": []})
        answers["bad json"] = api.client.post("/predict", content=b"{",
                                              headers={"content-type": "application/json"})
        answers["bad base64"] = api.client.post("/predict", json={"images": ["@@@"]})
        answers["json nested 90,000 deep"] = api.client.post(
            "/predict", content=b"[" * 90_000, headers={"content-type": "application/json"})
        answers["text/plain"] = api.client.post("/predict", content=good,
                                                headers={"content-type": "text/plain"})
        answers["raw junk"] = api.client.post("/predict", content=b"junk",
                                              headers={"content-type": "image/png"})
        pixels = digits.x[1000:1002, 0]
        arrays = {"npy of objects (pickle)": np.array([pixels[0], "x"], dtype=object),
                  "npy of 16x16 images": np.zeros((2, 16, 16), np.uint8),
                  "npy out of range": pixels.astype(np.int16) * 300,
                  "npy of strings": np.full((1, 8, 8), "a"),
                  "npy of one row": pixels.reshape(-1), "npy of 5 images": np.repeat(pixels, 3, 0)[:5],
                  "npy of no images": pixels[:0]}
        answers |= {name: api.client.post("/predict", content=npy_bytes(array),
                                          headers={"content-type": "application/x-npy"})
                    for name, array in arrays.items()}
        header = npy_bytes(np.zeros((1, 1, 1), np.uint8))[:-1]
        answers["npy header bomb"] = api.client.post(
            "/predict", content=header.replace(b"(1, 1, 1)", b"(1, 30000, 30000)"),
            headers={"content-type": "application/x-npy"})
        answers["npy shape of booleans"] = api.client.post(
            "/predict", content=header.replace(b"(1, 1, 1), }", b"(True, 1, 1)}"),
            headers={"content-type": "application/x-npy"})
        answers["npy truncated"] = api.client.post("/predict", content=npy_bytes(pixels)[:-10],
                                                   headers={"content-type": "application/x-npy"})
        assert api.client.get("/health").json()["status"] == "ok"
        assert api.predict_files([good]).status_code == 200
    for name, answer in answers.items():
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        body = answer.json()
        assert body["error"] and "Traceback" not in answer.text, name
    assert answers["too large"].status_code == 413 and answers["too many"].status_code == 413
    assert answers["header bomb"].status_code == 422
    assert "max_image_pixels" in answers["header bomb"].json()["error"]
    assert answers["text/plain"].status_code == 415
    assert answers["npy of 5 images"].status_code == 413
    expected = {"npy of objects (pickle)": "Python objects",
                "npy of 16x16 images": "model takes 1 channel(s) of 8x8",
                "npy out of range": "image 0: pixel values outside", "npy of strings": "dtype",
                "npy of one row": "expected (N, H, W)", "npy header bomb": "max_image_pixels",
                "npy truncated": "truncated", "npy of no images": "no images",
                "npy shape of booleans": "malformed .npy header"}
    for name, words in expected.items():
        assert words in answers[name].json()["error"], (name, answers[name].json())


def test_a_client_that_drips_its_body_is_refused_in_time_and_others_are_served(ws, digits):
    import socket

    with Server(ws, body_timeout_s=0.5) as api:
        port = int(str(api.client.base_url).rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"\x89PNG")  # 996 bytes never come
            assert api.predict_files(digit_pngs(digits, [1000])).status_code == 200
            start = time.time()
            reply = slow.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 408") and "serve.body_timeout_s" in reply, reply
        assert time.time() - start < 5


def test_a_new_champion_is_swapped_in_under_load_with_no_failed_or_mixed_answer(ws, digits):
    from mains.versions import load_registry, save_registry, store_version
    from tasks.promote import switch_champion

    registry = load_registry(ws.registry)
    v1 = ws.root / registry["versions"]["v1"]["path"]
    v2 = store_version(registry, v1, ws.versions, "another-sha")  # same weights, another version
    save_registry(ws.registry, registry)
    pngs = digit_pngs(digits, range(1000, 1016))
    answers, stop = [], threading.Event()
    with Server(ws, max_wait_ms=2.0) as api:
        def hammer():
            while not stop.is_set():
                answers.append(api.predict_files(pngs[:2]))
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(hammer)
            for version in (v2, "v1", v2):  # promote, roll back, promote again
                time.sleep(0.4)
                current = load_registry(ws.registry)
                save_registry(ws.registry, switch_champion(current, version, "test", "swap"))
                deadline = time.time() + 10
                while api.client.get("/health").json()["version"] != version:
                    assert time.time() < deadline, f"{version} not swapped in"
                    time.sleep(0.02)
            time.sleep(0.3)
            stop.set()
    assert len(answers) > 20
    assert all(a.status_code == 200 for a in answers)
    versions = [a.json()["version"] for a in answers]
    assert set(versions) == {"v1", v2}
    assert all(len(a.json()["predictions"]) == 2 for a in answers)
    assert json.loads(answers[-1].text)["version"] == v2


def test_feedback_gathers_labelled_inputs_into_a_batch_in_the_drop_folder(ws, digits):
    from PIL import Image

    idx = list(range(1000, 1006))
    with Server(ws, feedback_batch=5) as api:
        answer = api.predict_files(digit_pngs(digits, idx)).json()
        ids = [p["id"] for p in answer["predictions"]]
        post = lambda i, label: api.client.post("/feedback", json={"prediction_id": i,  # noqa: E731
                                                                    "label": label})
        assert post(ids[0], "../up").status_code == 422
        assert post("no-such-id", "3").status_code == 404
        huge = api.client.post("/feedback", content=b"{" + b" " * 100_000 + b"}",
                               headers={"content-type": "application/json"})
        assert huge.status_code == 413  # a feedback body is read within a limit too
        replies = [post(i, digits.labels[k]).json() for i, k in zip(ids[:5], idx[:5], strict=True)]
        assert post(ids[0], "3").status_code == 404  # labelled already
        metrics = api.client.get("/metrics").text
    assert [r["batch"] is None for r in replies] == [True] * 4 + [False]
    (batch,) = (ws.root / "drops").iterdir()
    assert (batch / "_READY").exists()
    files = sorted(batch.glob("*/*.png"))
    assert len(files) == 5 and not list((ws.batches.parent / "feedback" / "pending").glob("*/*"))
    for i, k in zip(ids[:5], idx[:5], strict=True):  # lossless: the pixels the model saw
        (png,) = [f for f in files if f.stem == i]
        assert png.parent.name == digits.labels[k]
        assert np.array_equal(np.asarray(Image.open(png)), digits.x[k][0])
    assert float(metric(metrics, "evergreen_feedback_total")) == 5
    assert read_json(ws.reports / "serving.json")["feedback"]["batches"] == 1


def stream(api, x: np.ndarray, per_request: int = 25) -> None:
    for start in range(0, len(x), per_request):
        assert api.predict_files([png_bytes(img[0]) for img in x[start:start + per_request]]) \
            .status_code == 200


def test_a_brighter_stream_fires_drift_within_one_window_and_an_unshifted_one_does_not(ws, digits):
    windows = []
    held_out = digits.x[1000:1100]
    with Server(ws, on_window=windows.append, drift_window=100) as api:
        stream(api, held_out)  # unshifted: one window
        calm = read_json(ws.reports / "serving.json")["drift"]
        stream(api, np.clip(held_out.astype(int) + 90, 0, 255).astype(np.uint8))
        deadline = time.time() + 10
        while len(windows) < 2 and time.time() < deadline:
            time.sleep(0.05)
        shifted = read_json(ws.reports / "serving.json")["drift"]
    assert not calm["drifted"] and calm["samples"] == 100
    assert shifted["drifted"] and "pixel shift" in shifted["reasons"][0]
    assert [w["drifted"] for w in windows] == [False, True]
    assert windows[1]["pixel_psi"] == shifted["pixel_psi"]
    from app.printing import print_status, status_view

    assert "pixel shift: PSI" in print_status(status_view(ws))  # evergreen status shows it


def test_a_drifted_window_reaches_prefect_as_an_event_and_an_artifact(prefect_harness, ws):
    from prefect.artifacts import Artifact

    from app.api_state import Publisher

    window = {"version": "v1", "samples": 100, "pixel_psi": 3.2, "class_pvalue": 0.5,
              "drifted": True, "reasons": ["pixel shift: PSI of per-image mean 3.2 > 0.25"]}
    publish = Publisher(ws)
    assert publish(window)
    artifact = Artifact.get("serving-drift")
    assert artifact is not None and "pixel shift" in artifact.data
    calm = {**window, "drifted": False, "reasons": []}
    assert not publish(calm)  # a calm window right after: not another flow run


def test_evergreen_serve_api_serves_the_champion_beside_the_deployments(ws):
    import socket

    import httpx

    from app.serve import start_api

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start_api(ws, Config.model_validate({**TINY_PARAMS, "serve": {"port": port}}))
    deadline = time.time() + 30
    while True:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
            break
        except httpx.TransportError:
            assert time.time() < deadline, "the api did not start"
            time.sleep(0.05)
    assert health["version"] == "v1"
