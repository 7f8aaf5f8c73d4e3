"""serve.py and utils/inference/server.py: answers equal detect.py's, bad input gets a JSON 4xx and the server goes on
serving, the limits hold (size, pixels, time, concurrency), batching, the upload page in a real browser."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from benchmarks.serve_load import (
    CHROMIUM,
    Probe,
    bad_probes,
    check_page,
    good_probes,
    load,
    png,
    reference_boxes,
    same_boxes,
    schedule,
    send,
)
from tests.fixtures_api import scene, stub_detector
from tests.fixtures_train import free_port
from utils.inference.api import Detector
from utils.inference.server import BackgroundServer, BatchConfig, ServeLimits, bind_socket, create_app

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "data" / "images").glob("*.jpg"))
MAX_BYTES = 300_000
# the page's first class colours (serve_page.html PALETTE), RGB
MULTIPART_X = {"content-type": "multipart/form-data; boundary=x"}  # a malformed multipart body follows it
PALETTE = [(0xFF, 0x38, 0x38), (0x2C, 0x99, 0xA8), (0xFF, 0x9D, 0x97)]


@pytest.fixture(scope="module")
def references(trained_weights) -> list[np.ndarray]:
    return reference_boxes(str(trained_weights), IMAGES, None)


@pytest.fixture(scope="module")
def server(trained_weights):
    """The trained fixture model served in this process, batching up to 4 same-shaped images."""
    from detect import default_imgsz

    detector = Detector(trained_weights, imgsz=default_imgsz(trained_weights))  # what detect.py and serve.py use
    app = create_app(detector, BatchConfig(max_batch=4, wait_ms=5), ServeLimits(max_bytes=MAX_BYTES))
    with BackgroundServer(app, bind_socket("127.0.0.1", 0)) as s:
        yield s


def test_answers_are_detect_py_boxes_in_yolov5_records(server, references):
    for probe in good_probes(IMAGES, references):
        status, reply = send(requests, server.url, probe, timeout=60)
        assert status == 200, reply
        assert same_boxes(reply["detections"], probe.reference, tol=1e-4), probe.kind
        assert len(probe.reference) > 0  # the fixture model finds shapes, so the comparison has boxes in it
        first = reply["detections"][0]
        assert list(first) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]  # YOLOv5's columns
        assert isinstance(first["class"], int) and first["name"] in ("circle", "rectangle", "triangle")
        assert reply["image"] == {"width": 256, "height": 256}
        assert reply["speed_ms"]["total"] >= reply["speed_ms"]["inference"] > 0


def test_every_bad_request_gets_its_json_4xx_and_the_server_keeps_serving(server, references):
    jpeg = IMAGES[0].read_bytes()
    for probe in bad_probes(jpeg, MAX_BYTES):
        status, reply = send(requests, server.url, probe, timeout=60)
        assert (status, sorted(reply)) == (probe.expect, ["error"]), (probe.kind, status, reply)
        assert "\n" not in reply["error"] and "Traceback" not in reply["error"]
    odd = [
        (requests.get(f"{server.url}/detect", timeout=10), 405),
        (requests.get(f"{server.url}/nowhere", timeout=10), 404),
        (requests.post(f"{server.url}/detect?draw=maybe", data=jpeg, timeout=10), 422),
        (requests.post(f"{server.url}/detect", data=b"--x\r\nno", headers=MULTIPART_X, timeout=10), 400),
        (requests.post(f"{server.url}/detect", data=png(12, 12)[:-20], timeout=10), 422),  # a PNG cut short
    ]
    for r, expect in odd:
        assert (r.status_code, list(r.json())) == (expect, ["error"]), r.text
    status, reply = send(requests, server.url, Probe("again", jpeg), timeout=60)
    assert status == 200 and same_boxes(reply["detections"], references[0], tol=1e-4)
    health = requests.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["refused"]["413"] >= 2 and health["pending"] == 0


def test_draw_returns_the_annotated_jpeg(server):
    r = requests.post(f"{server.url}/detect?draw=true", files={"image": IMAGES[0].read_bytes()}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    import cv2

    drawn = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(IMAGES[0]))
    assert drawn.shape == original.shape and int(r.headers["x-detections"]) > 0
    assert np.abs(drawn.astype(int) - original).max() > 100  # boxes drawn on it


def test_short_load_no_5xx_no_lost_or_wrong_answers_and_batches_form(server, references):
    """The load benchmark in small: 8 clients, 120 requests, 10 % bad (benchmarks/serve_load.py sends 500)."""
    probes = schedule(good_probes(IMAGES, references), bad_probes(IMAGES[0].read_bytes(), MAX_BYTES), 120, 0.1, 0)
    before = server.server.config.app.state.batcher
    images0, batches0 = before.images, before.batches
    result = load(server.url, probes, clients=8, tol=1e-3)
    assert (result.server_errors, result.lost, result.wrong) == (0, [], [])
    assert result.status[200] == 108 and sum(v for k, v in result.status.items() if 400 <= k < 500) == 12
    assert before.batches - batches0 < before.images - images0 == 108  # some requests shared a model call


class SlowStub:
    """A Detector stand-in that takes `delay` seconds per call (the stub's geometry, no weights)."""

    def __init__(self, delay: float):
        self.detector, self.delay = stub_detector(imgsz=(64, 64)), delay
        self.names, self.imgsz, self.backend = self.detector.names, self.detector.imgsz, self.detector.backend

    def __call__(self, images, bgr=False):
        time.sleep(self.delay)
        return self.detector(images, bgr=bgr)


def _jpeg(im: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", im[..., ::-1])[1].tobytes()


def test_slow_model_answers_504_and_a_full_queue_503_then_recovers():
    limits = ServeLimits(timeout=0.5, max_pending=2)
    app = create_app(SlowStub(0.8), BatchConfig(max_batch=1), limits)
    with BackgroundServer(app, bind_socket("127.0.0.1", 0)) as s:
        body = _jpeg(scene())
        import concurrent.futures as cf

        with cf.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: requests.post(f"{s.url}/detect", data=body, timeout=30), range(4)))
        statuses = sorted(r.status_code for r in codes)
        assert set(statuses) <= {503, 504} and 503 in statuses and 504 in statuses, statuses
        busy = next(r for r in codes if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
        time.sleep(1.0)  # the slow calls drain
        app.state.batcher.detector.delay = 0.0
        r = requests.post(f"{s.url}/detect", data=body, timeout=30)
        assert r.status_code == 200 and [d["class"] for d in r.json()["detections"]] == [1]


def test_model_failure_is_a_json_500_and_the_server_goes_on():
    stub = SlowStub(0.0)
    app = create_app(stub, BatchConfig(), ServeLimits())
    with BackgroundServer(app, bind_socket("127.0.0.1", 0)) as s:
        stub.detector = None  # calling it now raises TypeError inside the inference thread
        r = requests.post(f"{s.url}/detect", data=_jpeg(scene()), timeout=30)
        assert r.status_code == 500 and "TypeError" in r.json()["error"]
        stub.detector = stub_detector(imgsz=(64, 64))
        assert requests.post(f"{s.url}/detect", data=_jpeg(scene()), timeout=30).status_code == 200


def test_cli_bad_flags_and_a_taken_port_are_one_line_exit_2():
    with bind_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        for args, says in [
            (["--port", "70000"], "--port 70000: must be in 0..65535"),
            (["--max-batch", "0"], "--max-batch 0"),
            (["--timeout", "-1"], "--timeout -1"),
            (["--port", str(port)], "cannot listen there"),
        ]:
            r = subprocess.run([sys.executable, str(ROOT / "serve.py"), *args], capture_output=True, text=True)
            assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_py_starts_answers_and_stops_on_ctrl_c(trained_weights, tmp_path):
    port = free_port()
    cmd = [sys.executable, str(ROOT / "serve.py"), "--weights", str(trained_weights), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except requests.RequestException:
                time.sleep(0.3)
        assert health["model"] == "best.pt" and health["limits"]["max_pending"] == 64
        r = requests.post(f"http://127.0.0.1:{port}/detect", data=IMAGES[1].read_bytes(), timeout=60)
        assert r.status_code == 200 and r.json()["detections"]
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert f"Serving best.pt at http://127.0.0.1:{port}" in out and "Stopped after 1 answered requests" in out


def _browser_missing() -> str:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-test.txt)"
    if not os.path.exists(CHROMIUM) or not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it where it can)"
    return ""


@pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "browser present")
def test_upload_page_in_headless_chromium_draws_the_boxes(server, references, tmp_path):
    shot = tmp_path / "page.png"
    page = check_page(server.url, IMAGES[0], shot)
    ref = references[0]
    assert page.status.startswith(f"{len(ref)} detections in 256x256"), page.status
    table = np.array([[float(v) for v in row[1:]] for row in page.rows])  # confidence, xmin, ymin, xmax, ymax
    assert np.abs(table - ref[:, [4, 0, 1, 2, 3]]).max() < 0.051  # the table shows the JSON, rounded
    # each box's left edge is drawn: a class colour (its own, unless a later box's line or label lies on top)
    distance = np.abs(np.array(page.edge_rgb)[:, None] - np.array(PALETTE)[None]).max(2)  # (boxes, colours)
    assert (distance.min(1) < 60).all(), page.edge_rgb
    own = distance[np.arange(len(ref)), ref[:, 5].astype(int)] < 60
    assert own.mean() >= 0.5, (page.edge_rgb, ref[:, 5])
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"


def test_accepted_connections_send_without_nagle():
    """bind_socket's TCP_NODELAY reaches each accepted connection: without it every request after the first on a
    kept-alive connection waited ~44 ms for the client's delayed ACK (measured with requests and curl)."""
    import socket

    with bind_socket("127.0.0.1", 0) as listener, socket.create_connection(listener.getsockname()[:2]):
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    plain = socket.socket()  # the test's premise: a socket made without the option does not have it
    assert plain.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    plain.close()
