"""Load test of serve.py: many concurrent clients, bad requests mixed in, every answer checked against detect.py.

    python benchmarks/serve_load.py                                  # the quick-start model, 500 requests, 8 clients
    python benchmarks/serve_load.py --weights best.pt --configs 1:0 4:2 8:5 --rounds 3 --page

Each --configs MAX_BATCH:WAIT_MS starts its own `python serve.py` (a subprocess on a free 127.0.0.1 port, --max-batch
and --batch-wait-ms set, uploads capped at --max-upload-mb). Every round sends each server --requests requests from
--clients closed-loop clients (each sends its next request when the last is answered), the servers' order rotated
per round; --bad of them are bad (empty, not an image, truncated JPEG, a 1x100000 strip, a decompression bomb, an
oversized body, multipart without the 'image' field), the rest are the --source images, alternately as multipart and
as the raw body. Good answers must have the boxes detect.py gives for the image (same count, class, and coordinates
and confidence within --tol); bad ones the expected 4xx. Prints, per config, the median over rounds of requests/s and
of p50 / p95 latency of the good requests, with counts of 5xx, lost (no answer) and wrong answers. --page uploads an
image in headless Chromium to the upload page and saves a screenshot in the run folder (runs/serve_load/exp*).
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import requests

import detect
from benchmarks.common import cpu_name
from utils.core import args as A
from utils.core.errors import UserError, cli_main
from utils.core.files import increment_path
from utils.core.log import LOGGER

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium)
# headless in a closed network: without the background-networking flags Chromium keeps dialling Google's hosts
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Probe:
    """One request the load test can send, and what must come back."""

    kind: str  # the image's file name, or the kind of bad input
    body: bytes
    multipart: bool = False
    expect: int | None = None  # the 4xx a bad request must get; None: a good one
    reference: np.ndarray | None = None  # detect.py's (n, 6) boxes for a good one


def png(w: int, h: int, rows: int | None = None) -> bytes:
    """A grey PNG whose header says w x h, holding only `rows` rows of data (all when None): rows < h makes a
    decompression bomb's cheap cousin, a file far smaller than its pixels."""
    raw = zlib.compress((b"\x00" + b"\x80" * w) * (h if rows is None else rows), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def bad_probes(jpeg: bytes, max_bytes: int) -> list[Probe]:
    """The bad inputs of issue 22, each with the status the server must answer."""
    return [
        Probe("empty body", b"", expect=400),
        Probe("not an image", b"name,value\n" * 40, expect=415),
        Probe("truncated JPEG", jpeg[: len(jpeg) // 2], expect=422),
        Probe("1x100000 image", png(1, 100_000), expect=422),
        Probe("decompression bomb", png(30_000, 30_000, rows=1), expect=413),
        Probe("oversized body", jpeg + bytes(max_bytes), expect=413),
        Probe("multipart without 'image'", b"x", multipart=True, expect=400),
    ]


def good_probes(images: list[Path], boxes: list[np.ndarray]) -> list[Probe]:
    """Each image twice: as the multipart field 'image' and as the raw body."""
    return [
        Probe(p.name, p.read_bytes(), multipart=m, reference=b) for p, b in zip(images, boxes) for m in (True, False)
    ]


def same_boxes(records: list[dict[str, Any]], reference: np.ndarray, tol: float) -> bool:
    """The server's records hold reference's boxes: same count and classes, coordinates and confidence within tol."""
    keys = ("xmin", "ymin", "xmax", "ymax", "confidence", "class")
    got = np.array([[r[k] for k in keys] for r in records], dtype=np.float64).reshape(-1, 6)
    if got.shape != reference.shape:
        return False
    return bool((got[:, 5] == reference[:, 5]).all() and np.abs(got[:, :5] - reference[:, :5]).max(initial=0) <= tol)


@dataclass
class LoadResult:
    """What one burst of requests measured."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, good requests answered 200
    status: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # what was wrong with each wrong answer
    lost: list[str] = field(default_factory=list)  # requests with no HTTP answer (connection error, client timeout)

    @property
    def n(self) -> int:
        return sum(self.status.values()) + len(self.lost)

    @property
    def server_errors(self) -> int:
        return sum(v for k, v in self.status.items() if k >= 500)

    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return 1e3 * float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def send(session: Any, url: str, probe: Probe, timeout: float) -> tuple[int, Any]:
    """POST probe to url/detect: (status, parsed JSON)."""
    if probe.multipart:
        field_name = "image" if probe.expect is None else "file"
        r = session.post(f"{url}/detect", files={field_name: (probe.kind, probe.body)}, timeout=timeout)
    else:
        r = session.post(f"{url}/detect", data=probe.body, timeout=timeout)
    return r.status_code, r.json()


def check(probe: Probe, status: int, reply: Any, tol: float) -> str | None:
    """Why an answer is wrong, or None when it is right."""
    if probe.expect is not None:
        ok = status == probe.expect and isinstance(reply, dict) and "error" in reply
        return None if ok else f"{probe.kind}: expected {probe.expect}, got {status} {str(reply)[:80]}"
    if status != 200:
        return None if status >= 500 else f"{probe.kind}: good image refused with {status} {str(reply)[:80]}"
    return None if same_boxes(reply["detections"], probe.reference, tol) else f"{probe.kind}: boxes differ"


def schedule(good: list[Probe], bad: list[Probe], n: int, bad_fraction: float, seed: int) -> list[Probe]:
    """n requests, round(n * bad_fraction) of them bad (cycling through the kinds), in a seeded random order."""
    n_bad = round(n * bad_fraction)
    items = [bad[i % len(bad)] for i in range(n_bad)] + [good[i % len(good)] for i in range(n - n_bad)]
    random.Random(seed).shuffle(items)
    return items


def load(url: str, probes: list[Probe], clients: int, tol: float = 1e-3, timeout: float = 120) -> LoadResult:
    """Send probes from `clients` closed-loop client threads (one HTTP session each); check every answer."""
    result, lock = LoadResult(), threading.Lock()

    def client(share: list[Probe]) -> None:
        with requests.Session() as session:
            for probe in share:
                t0 = time.perf_counter()
                try:
                    status, reply = send(session, url, probe, timeout)
                except (requests.RequestException, ValueError) as e:
                    with lock:
                        result.lost.append(f"{probe.kind}: {type(e).__name__}")
                    continue
                dt, why = time.perf_counter() - t0, check(probe, status, reply, tol)
                with lock:
                    result.status[status] += 1
                    if why:
                        result.wrong.append(why)
                    elif probe.expect is None and status == 200:
                        result.latencies.append(dt)

    threads = [threading.Thread(target=client, args=(probes[i::clients],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class PageResult:
    status: str  # the page's status line
    rows: list[list[str]]  # the detections table
    edge_rgb: list[list[int]]  # the canvas pixel on each box's left edge, half-way down


def check_page(url: str, image: Path, screenshot: Path, timeout_s: float = 60) -> PageResult:
    """Upload image on the page at url in headless Chromium; read back what it drew and save a screenshot."""
    from playwright.sync_api import sync_playwright  # optional: only --page (and its test) drive a browser

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=timeout_s * 1e3)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(f"{url}/", timeout=timeout_s * 1e3)
            page.set_input_files("#file", str(image))
            page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=timeout_s * 1e3)
            rows = page.eval_on_selector_all(
                "#detections tbody tr", "t => t.map(r => [...r.cells].map(c => c.textContent))"
            )
            edge = page.evaluate(
                """rows => { const ctx = document.getElementById('canvas').getContext('2d');
                return rows.map(r => [...ctx.getImageData(Math.round(+r[2]), Math.round((+r[3] + +r[5]) / 2), 1, 1)
                .data].slice(0, 3)); }""",
                rows,
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return PageResult(page.text_content("#status") or "", rows, edge)
        finally:
            browser.close()


def reference_boxes(weights: str, images: list[Path], imgsz: list[int] | None) -> list[np.ndarray]:
    """What detect.py finds in each image (its default settings, as serve.py's)."""
    out = detect.run(weights=weights, source=[str(p) for p in images], imgsz=imgsz, nosave=True)
    return [f["boxes"].numpy().astype(np.float64) for f in out["frames"]]


@dataclass
class ServerProcess:
    """A `python serve.py` subprocess for one batching config, its log in the run folder."""

    max_batch: int
    wait_ms: float
    url: str = ""
    proc: subprocess.Popen | None = None
    rounds: list[LoadResult] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"max-batch {self.max_batch}, wait {self.wait_ms:g} ms"

    def start(self, weights: str, imgsz: list[int] | None, max_upload_mb: float, log: Path) -> None:
        with socket.socket() as s:  # a port free now; serve.py binds it before loading the model
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, str(ROOT / "serve.py"), "--weights", weights, "--port", str(port)]
        cmd += ["--max-batch", str(self.max_batch), "--batch-wait-ms", str(self.wait_ms)]
        cmd += ["--max-upload-mb", str(max_upload_mb)] + (["--imgsz", *map(str, imgsz)] if imgsz else [])
        self.url = f"http://127.0.0.1:{port}"
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise UserError(f"serve.py ({self.name}) exited with code {self.proc.returncode} — see its log")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        raise UserError(f"serve.py ({self.name}) did not answer /health within {timeout:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def parse_config(text: str) -> tuple[int, float]:
    """'MAX_BATCH:WAIT_MS' (or just MAX_BATCH) -> (max_batch, wait_ms); UserError when malformed."""
    try:
        batch, _, wait = text.partition(":")
        return A.check_int("configs", int(batch), lo=1, hi=64), float(wait or 0)
    except ValueError:
        raise UserError(f"--configs {text}: expected MAX_BATCH:WAIT_MS, e.g. 4:2") from None


def source_images(source: str | Path, limit: int) -> list[Path]:
    """Up to limit image files of a folder (sorted), or the one file given."""
    path = Path(source)
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes) if path.is_dir() else [path]
    if not files or not path.exists():
        raise UserError(f"--source {source}: no images there — pass a folder of images or one image")
    return files[:limit]


def report(servers: list[ServerProcess], requests: int, clients: int) -> str:
    """One markdown table: per config, medians over its rounds, and the totals of every check."""
    lines = [
        f"CPU {cpu_name()}, {len(servers[0].rounds)} rounds of {requests} requests from {clients} clients per config",
        "| config | requests/s | p50 ms | p95 ms | 5xx | lost | wrong | 4xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        r = s.rounds
        four = sum(v for x in r for k, v in x.status.items() if 400 <= k < 500)
        lines.append(
            f"| {s.name} | {statistics.median(x.rate() for x in r):.1f} | "
            f"{statistics.median(x.percentile_ms(50) for x in r):.0f} | "
            f"{statistics.median(x.percentile_ms(95) for x in r):.0f} | {sum(x.server_errors for x in r)} | "
            f"{sum(len(x.lost) for x in r)} | {sum(len(x.wrong) for x in r)} | {four} |"
        )
    return "\n".join(lines)


def run(
    weights: str | None = None,
    source: str = str(ROOT / "data" / "images"),
    imgsz: list[int] | None = None,
    configs: tuple[str, ...] = ("1:0", "8:0"),
    requests: int = 500,
    clients: int = 8,
    bad: float = 0.1,
    rounds: int = 3,
    max_images: int = 20,
    max_upload_mb: float = 2.0,
    tol: float = 1e-3,
    page: bool = False,
    project: str = str(ROOT / "runs" / "serve_load"),
    name: str = "exp",
    seed: int = 0,
) -> dict[str, Any]:
    """Measure every config (see the module docstring); returns {config name: [LoadResult per round]}."""
    A.check_int("requests", requests, lo=1)
    A.check_int("clients", clients, lo=1, hi=256)
    A.check_float("bad", bad, 0.0, 1.0)
    A.check_int("rounds", rounds, lo=1)
    parsed = [parse_config(c) for c in configs]
    weights = str(weights or detect.newest_weights())
    images = source_images(source, max_images)
    save_dir = increment_path(Path(project) / name)
    save_dir.mkdir(parents=True)
    good = good_probes(images, reference_boxes(weights, images, imgsz))
    _, jpeg = cv2.imencode(".jpg", cv2.imread(str(images[0])))
    bad_list = bad_probes(jpeg.tobytes(), round(max_upload_mb * 2**20))
    servers = [ServerProcess(b, w) for b, w in parsed]
    try:
        for i, s in enumerate(servers):
            s.start(weights, imgsz, max_upload_mb, save_dir / f"server{i}.log")
        for s in servers:
            s.wait_ready()
        for r in range(rounds):
            for s in servers[r % len(servers) :] + servers[: r % len(servers)]:  # rotated: drift hits all alike
                s.rounds.append(load(s.url, schedule(good, bad_list, requests, bad, seed + r), clients, tol))
                LOGGER.info(f"round {r + 1} {s.name}: {s.rounds[-1].rate():.1f} requests/s")
        if page:
            shown = check_page(servers[0].url, images[0], save_dir / "page.png")
            LOGGER.info(f"page: {shown.status} ({len(shown.rows)} rows), screenshot {save_dir / 'page.png'}")
    finally:
        for s in servers:
            s.stop()
    table = report(servers, requests, clients)
    (save_dir / "results.md").write_text(table + "\n")
    print(table)
    for s in servers:
        for problem in sorted({w for x in s.rounds for w in x.wrong + x.lost})[:10]:
            LOGGER.warning(f"{s.name}: {problem}")
    return {s.name: s.rounds for s in servers}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )
    p.add_argument("--weights", help="model for serve.py (default: newest runs/train/*/weights/best.pt)")
    p.add_argument("--source", help="folder of images the good requests send")
    p.add_argument("--imgsz", nargs="+", type=int, help="inference size (default: the training size)")
    p.add_argument("--configs", nargs="+", help="MAX_BATCH:WAIT_MS per server to compare")
    p.add_argument("--requests", type=int, help="requests per server per round")
    p.add_argument("--clients", type=int, help="concurrent closed-loop clients")
    p.add_argument("--bad", type=float, help="fraction of bad requests")
    p.add_argument("--rounds", type=int, help="rounds (medians over them)")
    p.add_argument("--max-images", type=int, help="images of --source used")
    p.add_argument("--max-upload-mb", type=float, help="serve.py --max-upload-mb (the oversized body passes it)")
    p.add_argument("--tol", type=float, help="largest coordinate / confidence difference from detect.py")
    p.add_argument("--page", action="store_true", help="also upload an image on the page in headless Chromium")
    p.add_argument("--project", help="run folder parent")
    p.add_argument("--name", help="run folder name")
    p.add_argument("--seed", type=int, help="request order seed")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
