"""Serve a detector over HTTP: POST an image, get the boxes as JSON (YOLOv5's pandas records).

Usage:
    python serve.py --weights best.pt --port 8000
    curl -F image=@data/images/shapes_1.jpg http://127.0.0.1:8000/detect         # multipart, as YOLOv5's example
    curl --data-binary @data/images/shapes_1.jpg http://127.0.0.1:8000/detect    # or the raw bytes as the body
    curl -o drawn.jpg -F image=@img.jpg 'http://127.0.0.1:8000/detect?draw=true' # the image with its boxes drawn
    open http://127.0.0.1:8000/ (upload page), /docs (OpenAPI), /health

Binds to 127.0.0.1 unless --host says otherwise (0.0.0.0 serves every interface: put it behind a proxy you trust).
Any format detect.py runs (.pt, .torchscript, .onnx, _openvino_model/) loads once, with the same safe loaders.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

from detect import default_imgsz, newest_weights  # the same weights and size choice as detect.py
from utils.core import args as A
from utils.core.device import check_device
from utils.core.errors import UserError, cli_main, first_line
from utils.core.log import LOGGER, colorstr
from utils.inference.api import Detector
from utils.inference.server import BatchConfig, ServeLimits, bind_socket, create_app, server_url


def check_opts(o: dict[str, Any]) -> None:
    """Every flag, before the port is bound or the model loaded."""
    if o["imgsz"] is not None:
        A.check_imgsz(o["imgsz"], counts=(1, 2), multiple=None)
    A.check_float("conf_thres", o["conf_thres"], 0.0, 1.0, todo="e.g. --conf-thres 0.25")
    A.check_float("iou_thres", o["iou_thres"], 0.0, 1.0, todo="e.g. --iou-thres 0.45")
    A.check_int("max_det", o["max_det"], lo=1, todo="e.g. --max-det 1000")
    A.check_int("port", o["port"], lo=0, hi=65535, todo="0 picks a free port")
    A.check_int("max_batch", o["max_batch"], lo=1, hi=64, todo="1 runs every request alone")
    A.check_float("batch_wait_ms", o["batch_wait_ms"], 0.0, 1000.0)
    A.check_float("max_upload_mb", o["max_upload_mb"], 0.001, 1024.0)
    A.check_int("max_pixels", o["max_pixels"], lo=100, todo="e.g. --max-pixels 50000000")
    A.check_float("timeout", o["timeout"], 0.01, 3600.0, todo="seconds, e.g. --timeout 30")
    A.check_int("max_pending", o["max_pending"], lo=1, todo="e.g. --max-pending 64")


def run(
    weights: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    imgsz: int | list[int] | None = None,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
    device: str = "",
    half: bool = False,
    dnn: bool = False,
    max_batch: int = 8,
    batch_wait_ms: float = 0.0,
    max_upload_mb: float = 20.0,
    max_pixels: int = 50_000_000,
    timeout: float = 30.0,
    max_pending: int = 64,
) -> dict[str, Any]:
    """Serve until interrupted (Ctrl-C); returns what was served. The CLI's defaults are these. Waiting requests
    share model calls (max_batch 8: 1.5x the requests/s of one call each under 8 clients, benchmarks/serve_load.py);
    batch_wait_ms 0 so a lone request never waits for company (2-5 ms of waiting measured no faster)."""
    check_opts(locals())
    device = check_device(device)
    limits = ServeLimits(round(max_upload_mb * 2**20), max_pixels, timeout=timeout, max_pending=max_pending)
    try:
        sock = bind_socket(host, port)
    except OSError as e:
        why = first_line(e)
        raise UserError(f"--host {host} --port {port}: cannot listen there ({why}) — pick another port") from None
    try:
        weights = weights or newest_weights()
        size = default_imgsz(weights) if imgsz is None else imgsz
        detector = Detector(weights, device=device, imgsz=size, conf=conf_thres, iou=iou_thres, max_det=max_det,
                            fp16=half, dnn=dnn)  # fmt: skip
        detector.warmup()
        app = create_app(detector, BatchConfig(max_batch, batch_wait_ms), limits)
        LOGGER.info(f"Serving {Path(weights).name} at {colorstr('bold', server_url(sock))} (Ctrl-C stops)")
        # in the main thread, so uvicorn's own SIGINT/SIGTERM handling finishes the requests in flight first
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_keep_alive=5)).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has stopped: the normal end of a server
            pass
        LOGGER.info(f"Stopped after {app.state.server.served} answered requests")
    finally:
        sock.close()
    return {"served": app.state.server.served, "refused": app.state.server.refused}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """serve.py's flags; every default is run()'s."""
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )
    p.add_argument("--weights", type=str, help="model .pt/.torchscript/.onnx/_openvino_model (default: newest best.pt)")
    p.add_argument("--host", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, help="port (0: a free one)")
    p.add_argument("--imgsz", "--img", nargs="+", type=int, help="inference size (default: the training size)")
    p.add_argument("--conf-thres", type=float, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, help="maximum detections per image")
    p.add_argument("--device", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (CUDA only)")
    p.add_argument("--dnn", action="store_true", help="run an .onnx file with OpenCV DNN")
    p.add_argument("--max-batch", type=int, help="same-shaped waiting images run as one batch of up to this many")
    p.add_argument("--batch-wait-ms", type=float, help="how long a lone request waits for others to batch with")
    p.add_argument("--max-upload-mb", type=float, help="largest request body (MiB); larger: 413")
    p.add_argument("--max-pixels", type=int, help="largest image (width x height, read before decoding); larger: 413")
    p.add_argument("--timeout", type=float, help="seconds a request may take; longer: 504")
    p.add_argument("--max-pending", type=int, help="requests admitted at once; more: 503 with Retry-After")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
