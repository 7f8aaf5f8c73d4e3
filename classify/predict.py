"""Classify images, folders, globs, .txt lists, videos, webcams and streams; save copies with the top-5 drawn.

    python classify/predict.py --weights runs/train-cls/exp/weights/best.pt --source img.jpg
    python classify/predict.py --weights convnext_tiny_1k --source data/images/ --img 224 --save-txt
    python classify/predict.py --weights best.onnx --source vid.mp4              # exports from export.py too

Results go to runs/predict-cls/exp*/ (images and mp4s; labels/<name>.txt with 'prob name' per top-5 class).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from any cwd, as `python classify/predict.py`

from detect import OutputNames, VideoSaver, display_available, drop_empty, newest_weights, show_frame
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import NoUsableInputError, cli_main
from utils.core.files import atomic_write_text, increment_path
from utils.core.image_io import imwrite_atomic
from utils.core.log import LOGGER, colorstr
from utils.dataloaders.sources import Frame, load_source
from utils.inference.classify_api import ClassifyResult, load_classifier


def _save(frame: Frame, r: ClassifyResult, stem: str, save_dir: Path, videos: VideoSaver, opts: dict) -> None:
    """The annotated copy (image or video frame) and the label file of one frame."""
    if not opts["nosave"]:
        if frame.kind == "image":
            imwrite_atomic(save_dir / f"{stem}{Path(frame.path).suffix or '.jpg'}", r.plot())
        else:
            videos.write(save_dir / stem, r.plot(), frame.fps)
    if opts["save_txt"]:
        name = stem if frame.kind == "image" else f"{stem}_{frame.frame}"
        atomic_write_text(save_dir / "labels" / f"{name}.txt", "\n".join(r.label_lines()) + "\n")


def run(
    weights: str | Path | None = None,
    source: str | Path | list = str(ROOT / "data" / "images"),
    imgsz: int | None = None,
    device: str = "",
    view_img: bool = False,
    save_txt: bool = False,
    nosave: bool = False,
    project: str | Path = str(ROOT / "runs" / "predict-cls"),
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = False,
    vid_stride: int = 1,
) -> dict[str, Any]:
    """Classify every frame of source; returns save_dir, per-frame top-5 (class, probability) lists and the speed
    per image (ms). imgsz None: the model's (an export's traced size, else 224). The CLI's defaults are these."""
    if imgsz is not None:
        A.check_int("imgsz", imgsz, lo=16, todo="e.g. --imgsz 224")
    A.check_int("vid_stride", vid_stride, lo=1, todo="e.g. --vid-stride 1")
    check_device(device)
    clf = load_classifier(weights or newest_weights(ROOT / "runs" / "train-cls"), device=select_device(device),
                          half=half, imgsz=imgsz)  # fmt: skip
    loader = load_source(source, vid_stride=vid_stride)
    if view_img and not display_available():
        LOGGER.warning("WARNING: --view-img needs a display and OpenCV GUI support; not showing results")
        view_img = False
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    created = not save_dir.exists()
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    opts, names, videos = {"nosave": nosave, "save_txt": save_txt}, OutputNames(), VideoSaver()
    frames, totals, keep_going = [], [0.0, 0.0, 0.0], True
    try:
        for batch in loader:
            results = clf([f.image for f in batch], bgr=True)
            totals = [t + p.t * 1e3 for t, p in zip(totals, clf.times)]
            for f, r in zip(batch, results):
                _save(f, r, names.stem(f), save_dir, videos, opts)
                frames.append({"path": f.path, "frame": f.frame, "top5": list(zip(r.top5, r.top5conf))})
                # YOLOv5's line: the network's input size (every image is centre-cropped to imgsz x imgsz)
                s = clf.imgsz
                LOGGER.info(f"{f.describe()}{s}x{s} {r.summary()}, {clf.times[1].t * 1e3 / len(batch):.1f}ms")
                if view_img:
                    keep_going = show_frame(f, r.plot()) and keep_going
            if not keep_going:  # q pressed in a --view-img window: stop the whole source, as detect.py does
                break
    finally:
        videos.close()
        if hasattr(loader, "close"):
            loader.close()
    if not frames:
        drop_empty(save_dir, created)
        raise NoUsableInputError(f"--source {source}: not one of its inputs could be read (see the warnings above)")
    speed = [t / len(frames) for t in totals]
    LOGGER.info(
        "Speed: {:.1f}ms pre-process, {:.1f}ms inference, {:.1f}ms post-process per image at shape "
        "(1, 3, {s}, {s})".format(*speed, s=clf.imgsz)
    )
    LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}")
    return {"save_dir": save_dir, "frames": frames, "speed": dict(zip(("preprocess", "inference", "post"), speed))}


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """classify/predict.py's flags (YOLOv5's); every default is run()'s."""
    p = A.ArgParser(description="Classify images and videos", defaults=A.signature_defaults(run))
    p.add_argument("--weights", type=str, help="classifier .pt / export / official name (default: newest best.pt)")
    p.add_argument("--source", type=str, help="file/dir/glob/.txt list/video/webcam index/URL/.streams")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="inference size (default: the model's)")
    p.add_argument("--device", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results (needs a display)")
    p.add_argument("--save-txt", action="store_true", help="save the top-5 to labels/*.txt")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--project", help="save results to project/name")
    p.add_argument("--name", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (CUDA only)")
    p.add_argument("--vid-stride", type=int, help="video frame-rate stride")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
