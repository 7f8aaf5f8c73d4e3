"""REST server for a detector: POST an image to /detect, get YOLOv5's pandas records back (serve.py is the CLI).

Why FastAPI on uvicorn: an ASGI server answers the cheap work (limits, health, 4xx errors, the upload page) on one
event loop while the model runs on its own thread, so a burst of requests queues instead of tying up one OS thread
each, and several waiting requests can share one batched model call. FastAPI adds the OpenAPI page (/docs) that
users of YOLOv5's Flask example ask for; uvicorn is the server FastAPI documents.

Every request is bounded before any pixel is decoded: body size (413), width x height read from the header (413,
which also stops decompression bombs), sides below MIN_SIDE (422), time to receive the body (408) and to answer
(504), and the number of requests admitted at once (503 with Retry-After). Every refusal is a JSON
{"error": "..."} with a 4xx/5xx code; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response

from utils.core.image_io import decode
from utils.core.log import LOGGER
from utils.inference.api import Detector, ImageResult

PAGE = Path(__file__).with_name("serve_page.html")  # the upload page served at /
DECODERS = 4  # uploads decoded at once (each up to max_pixels x 3 bytes)
MIN_SIDE = 10  # the label check's smallest image: a 1 x 100000 strip letterboxes to a 1-pixel line


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost; exceeding any is a 4xx (5xx for the server's own time and capacity)."""

    max_bytes: int = 20 * 2**20  # request body (413)
    max_pixels: int = 50_000_000  # width x height from the image header, before decoding (413)
    read_timeout: float = 10.0  # seconds to receive the body (408)
    timeout: float = 30.0  # seconds from arrival to answer (504)
    max_pending: int = 64  # requests admitted at once, queued or running; more get 503


@dataclass(frozen=True)
class BatchConfig:
    """max_batch same-shaped waiting images run as one model call; the first waits up to wait_ms for company."""

    max_batch: int = 1
    wait_ms: float = 0.0


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line reason (what, and what to do)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class BatchTimes:
    """Milliseconds of the model call a request ran in (shared by every image of that batch)."""

    preprocess: float
    inference: float
    nms: float
    batch_size: int


@dataclass
class _Job:
    image: np.ndarray  # BGR
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future, value: Any) -> None:
    """Runs on the event loop: hand the worker's answer to the request unless it already timed out."""
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


class Batcher:
    """The one thread that runs the model: waiting images of the same shape go through it as one batch.

    Only same-shaped images share a call: Detector letterboxes those with minimal padding, exactly as detect.py does
    for one image, so a batched answer has the boxes detect.py gives (different shapes would be padded square)."""

    def __init__(self, detector: Detector, config: BatchConfig):
        self.detector, self.config = detector, config
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.held: deque[_Job | None] = deque()  # taken off the queue but not batchable with the job run then
        self.thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self.batches = self.images = 0
        self.busy_since: float | None = None  # perf_counter at the start of the model call in progress

    def describe(self) -> str:
        """The thread's state in words, for the log line of a request that timed out."""
        busy = self.busy_since
        running = f"in a model call for {time.perf_counter() - busy:.1f} s" if busy is not None else "idle"
        alive = "" if self.thread.is_alive() else ", thread DEAD"
        return f"inference thread {running}{alive}, {self.jobs.qsize() + len(self.held)} queued"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=60)

    async def submit(self, image: np.ndarray) -> tuple[ImageResult, BatchTimes]:
        loop = asyncio.get_running_loop()
        job = _Job(image, loop.create_future(), loop)
        self.jobs.put(job)
        return await job.future

    def _next(self, timeout: float | None) -> _Job | None:
        """The next job (held-back ones first); raises queue.Empty when none came within timeout."""
        if self.held:
            return self.held.popleft()
        return self.jobs.get(timeout=timeout) if timeout is None or timeout > 0 else self.jobs.get_nowait()

    def _gather(self, first: _Job) -> list[_Job]:
        """first plus the jobs of its image shape that arrive within wait_ms, up to max_batch."""
        batch, shape = [first], first.image.shape
        for job in [j for j in self.held if j is not None and j.image.shape == shape][: self.config.max_batch - 1]:
            self.held.remove(job)
            batch.append(job)
        deadline = time.perf_counter() + self.config.wait_ms / 1e3
        while len(batch) < self.config.max_batch:
            try:
                job = self.jobs.get(timeout=max(deadline - time.perf_counter(), 1e-6))
            except queue.Empty:
                break
            if job is not None and job.image.shape == shape:
                batch.append(job)
            else:
                self.held.append(job)  # another shape, or the stop signal: after this batch
                if job is None:
                    break
        return batch

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch = [j for j in self._gather(first) if not j.future.cancelled()]  # timed-out requests: skip
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        self.busy_since = time.perf_counter()
        try:
            dets = self.detector([j.image for j in batch], bgr=True)
            times = BatchTimes(dets.times["preprocess"], dets.times["inference"], dets.times["nms"], len(batch))
            answers: list[Any] = [(r, times) for r in dets]
        except Exception as e:  # a model failure answers these requests (500) and the thread goes on serving
            LOGGER.exception("inference failed")
            answers = [e] * len(batch)
        self.busy_since = None
        self.batches, self.images = self.batches + 1, self.images + len(batch)
        for job, answer in zip(batch, answers):
            job.loop.call_soon_threadsafe(_settle, job.future, answer)


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header without decoding the pixels; RequestError when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"image too large to decode ({e}) — send a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(415, "not an image (JPEG, PNG, BMP, WebP or TIFF expected)") from None


def read_image(data: bytes, limits: ServeLimits) -> np.ndarray:
    """BGR pixels of an uploaded image after the size checks; RequestError for anything unusable."""
    if not data:
        raise RequestError(400, "empty upload — send an image as the multipart field 'image' or as the raw body")
    w, h = header_size(data)
    if w * h > limits.max_pixels:
        raise RequestError(413, f"image {w}x{h} has {w * h} pixels, over the limit of {limits.max_pixels}")
    if min(w, h) < MIN_SIDE:
        raise RequestError(422, f"image {w}x{h}: both sides must be at least {MIN_SIDE} pixels")
    im = decode(np.frombuffer(data, np.uint8), repair_truncated=False)
    if im is None:
        raise RequestError(422, f"the {w}x{h} image does not decode (truncated or corrupt) — send the whole file")
    return im


async def read_body(request: Request, limits: ServeLimits) -> bytes:
    """The request body, refused (413) as soon as it passes max_bytes, so an oversized upload is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise RequestError(413, f"upload of {declared} bytes is over the limit of {limits.max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise RequestError(413, f"upload is over the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, body: bytes) -> bytes:
    """The image in a body: the multipart field 'image' (as YOLOv5's Flask example takes it) or the body itself."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:  # the body was already read (under the size limit): parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as e:  # malformed multipart: the parser's reason, one line
        raise RequestError(400, f"malformed multipart upload ({str(e).splitlines()[0] if str(e) else e!r})") from None
    item = form.get("image")
    if item is None or isinstance(item, str):
        raise RequestError(400, "multipart upload without a file field named 'image' — send -F image=@file.jpg")
    return await item.read()


@dataclass
class ServerState:
    """What /health reports and admission uses; only touched on the event loop (no lock needed)."""

    model: str
    names: dict[int, str]
    imgsz: tuple[int, ...]
    batch: BatchConfig
    limits: ServeLimits
    pending: int = 0
    served: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    decoders: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(DECODERS))
    started: float = field(default_factory=time.time)

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.pending >= self.limits.max_pending:
            raise RequestError(503, f"busy: {self.pending} requests in progress — retry shortly", {"Retry-After": "1"})
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model,
            "names": self.names,
            "imgsz": list(self.imgsz),
            "batch": asdict(self.batch),
            "limits": asdict(self.limits),
            "pending": self.pending,
            "served": self.served,
            "refused": self.refused,
            "uptime_s": round(time.time() - self.started, 1),
        }


def answer(result: ImageResult, times: BatchTimes, t: dict[str, float]) -> dict[str, Any]:
    """The JSON for one image: YOLOv5's `results.pandas().xyxy[0].to_json(orient="records")` records under
    'detections', the image size, and milliseconds per stage (the model stages are those of the shared batch)."""
    h, w = result.image.shape[:2]
    ms = {k: round(v * 1e3, 2) for k, v in t.items()}
    return {
        "detections": result.records(),
        "image": {"width": w, "height": h},
        "speed_ms": {
            **ms,
            "preprocess": round(times.preprocess, 2),
            "inference": round(times.inference, 2),
            "nms": round(times.nms, 2),
        },
        "batch_size": times.batch_size,
    }


async def detect_request(request: Request, state: ServerState, batcher: Batcher, draw: bool) -> Response:
    """One POST /detect, start to answer, every stage bounded (see the module docstring)."""

    t0, t = time.perf_counter(), {}
    limits = state.limits
    with state.admit():
        try:
            body = await asyncio.wait_for(read_body(request, limits), limits.read_timeout)
        except asyncio.TimeoutError:
            raise RequestError(408, f"upload not received within {limits.read_timeout:g} s") from None
        data = await image_bytes(request, body)
        t["read"] = time.perf_counter() - t0
        # decoding is CPU work: off the event loop, and a few at a time, so that max_pending uploads at the pixel
        # limit are never all decoded at once (64 x 50 M pixels x 3 bytes would be 9.6 GB)
        im = await anyio.to_thread.run_sync(read_image, data, limits, limiter=state.decoders)
        t["decode"] = time.perf_counter() - t0 - t["read"]
        try:
            remaining = max(limits.timeout - (time.perf_counter() - t0), 0.001)
            result, times = await asyncio.wait_for(batcher.submit(im), remaining)
        except asyncio.TimeoutError:
            LOGGER.warning(f"504 after {time.perf_counter() - t0:.1f} s: {batcher.describe()}")
            raise RequestError(504, f"no answer within {limits.timeout:g} s — the server is overloaded") from None
        t["total"] = time.perf_counter() - t0
        state.served += 1
    if draw:
        ok, jpg = cv2.imencode(".jpg", result.plot())
        return Response(jpg.tobytes(), media_type="image/jpeg", headers={"X-Detections": str(len(result))})
    return JSONResponse(answer(result, times, t))


def create_app(detector: Detector, batch: BatchConfig = BatchConfig(), limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The FastAPI app: POST /detect, GET /health, GET / (upload page); the batcher runs while the app does."""

    name = Path(str(getattr(detector.backend, "weights", "model"))).name
    state = ServerState(name, detector.names, tuple(detector.imgsz), batch, limits)
    batcher = Batcher(detector, batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="ConvNeXt-YOLOv5 detection", lifespan=lifespan)
    app.state.server, app.state.batcher = state, batcher

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        state.refused[status] = state.refused.get(status, 0) + 1
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, e: RequestError) -> JSONResponse:
        return refuse(e.status, e.message, e.headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405 ... as JSON too
        return refuse(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        where = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else "request"
        return refuse(422, f"{where}: {errors[0].get('msg', 'invalid') if errors else 'invalid'}")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:  # logged with its traceback, answered in one line
        LOGGER.exception(f"{request.method} {request.url.path} failed")
        return refuse(500, f"internal error ({type(e).__name__}) — see the server log")

    @app.post("/detect")
    async def detect(request: Request, draw: bool = False) -> Any:
        """Detect objects in one image (multipart field 'image' or the raw body); ?draw=true returns the image
        with the boxes drawn (JPEG) instead of JSON."""
        return await detect_request(request, state, batcher, draw)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return state.health()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text()

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), bound before the model loads so a taken port fails
    in one line and at once; OSError when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # inherited by every accepted connection: without it the second request on a kept-alive connection waited ~44 ms
    # (the response's two writes held back by Nagle until the client's delayed ACK; measured, echo app and /detect)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def server_url(sock: socket.socket) -> str:
    """http://host:port of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


class BackgroundServer:
    """uvicorn serving app on a socket from a background thread (tests, benchmarks, embedding in a program).

    with BackgroundServer(app, bind_socket("127.0.0.1", 0)) as s: requests.get(s.url + "/health")"""

    def __init__(self, app: FastAPI, sock: socket.socket, log_level: str = "warning"):
        self.sock, self.url = sock, server_url(sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
