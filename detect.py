"""Run detection on images, folders, globs, .txt lists, videos, webcams and streams; save annotated results.

Usage:
    python detect.py --source img.jpg                     # image
    python detect.py --source data/images/                # folder (or 'path/*.jpg' glob, or list.txt)
    python detect.py --source vid.mp4 --save-txt          # video: annotated mp4 + one label file per frame
    python detect.py --source 0                           # webcam
    python detect.py --source rtsp://host/stream          # RTSP / RTMP / HTTP stream (or a .streams list file)
    python detect.py --weights best.onnx --source img/    # also .torchscript / .onnx from export.py
    python detect.py --source big.jpg --slice 640 640     # small objects in large images: overlapping tiles

Results go to runs/detect/exp*/ (images and mp4s; labels/, crops/, predictions.csv when asked).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from models.checkpoint import trained_imgsz
from utils.core import args as A
from utils.core.device import check_device
from utils.core.errors import NoUsableInputError, UserError, cli_main
from utils.core.files import ROOT, increment_path
from utils.core.log import LOGGER, colorstr
from utils.dataloaders.label_check import exif_size
from utils.dataloaders.sources import Frame, collect_files, is_stream, load_source
from utils.inference.api import Detector, ImageResult, display_available
from utils.inference.slicing import DEFAULT_MERGE, DEFAULT_OVERLAP, MERGES, check_tiles, slice_config

DEFAULT_IMGSZ = 640  # YOLOv5's detect.py size, for weights that do not record their training size


def default_imgsz(weights: str | Path) -> int:
    """--imgsz when none is given: a checkpoint of ours was trained at opt["imgsz"] (objects at the scale the model
    learned; the quick start trains at 160, and 640 would enlarge its objects 4x), anything else uses YOLOv5's 640."""
    trained = trained_imgsz(weights)
    if trained:
        LOGGER.info(f"--imgsz not given: using {trained}, the size {Path(weights).name} was trained at")
        return trained
    return DEFAULT_IMGSZ


def newest_weights(root: Path = ROOT / "runs" / "train") -> Path:
    """The most recently written runs/train/*/weights/best.pt, announced in one line; UserError when none."""
    found = sorted(root.glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"no --weights given and no trained weights in {root}/*/weights/best.pt — "
            f"train first (python train.py) or pass --weights path/to/best.pt"
        )
    LOGGER.info(f"Using newest weights {found[-1]} (pass --weights to choose)")
    return found[-1]


class VideoSaver:
    """One cv2.VideoWriter per output path (mp4, the source's fps and frame size), released at the end."""

    def __init__(self):
        self.writers: dict[str, cv2.VideoWriter] = {}

    def write(self, path: Path, im: np.ndarray, fps: float) -> None:
        key = str(path.with_suffix(".mp4"))
        if key not in self.writers:
            h, w = im.shape[:2]
            self.writers[key] = cv2.VideoWriter(key, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not self.writers[key].isOpened():
                raise UserError(f"cannot write video {key} — check disk space and permissions")
        self.writers[key].write(im)

    def close(self) -> None:
        for w in self.writers.values():
            w.release()
        self.writers.clear()


def _stem(frame: Frame) -> str:
    """File-system-safe output name for a source (streams are URLs or webcam indexes)."""
    name = Path(frame.path).stem if frame.kind != "stream" else re.sub(r"[^\w.-]+", "_", frame.path).strip("_")
    return name or f"source{frame.index}"


class OutputNames:
    """One output name (stem) per input, unique within the run: a/img.jpg, b/img.jpg -> img, img_2.

    The image, its label file and its crops all use that stem, so nothing is overwritten and the log's counts are
    the files on disk. Keyed by (path, source index): every frame of a video shares its stem, and a file listed
    twice is saved twice, as the log counts it.
    """

    def __init__(self):
        self.by_source: dict[tuple[str, int], str] = {}
        self.taken: set[str] = set()  # casefolded: img.jpg and IMG.JPG collide on case-insensitive disks

    def stem(self, frame: Frame) -> str:
        key = (frame.path, frame.index)
        if key not in self.by_source:
            base = stem = _stem(frame)
            n = 1
            while stem.casefold() in self.taken:
                n += 1
                stem = f"{base}_{n}"
            self.taken.add(stem.casefold())
            self.by_source[key] = stem
            if stem != base:
                LOGGER.info(f"{frame.path}: an earlier input is also named {base}, results saved as {stem}.*")
        return self.by_source[key]


class Outputs:
    """Everything detect.py writes for each frame: annotated image/video, labels, crops, CSV rows."""

    def __init__(self, save_dir: Path, opt: dict[str, Any]):
        self.dir, self.opt, self.names = save_dir, opt, OutputNames()
        self.videos, self.label_files, self.csv_rows, self.n_frames = VideoSaver(), set(), [], 0
        if opt["save_txt"]:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)

    @property
    def n_labels(self) -> int:
        return len(self.label_files)

    def save(self, frame: Frame, result: ImageResult, annotated: np.ndarray | None) -> None:
        o, stem = self.opt, self.names.stem(frame)
        self.n_frames += 1
        if annotated is not None:
            if frame.kind == "image":
                cv2.imwrite(str(self.dir / f"{stem}{Path(frame.path).suffix}"), annotated)
            else:
                self.videos.write(self.dir / stem, annotated, frame.fps)
        if o["save_txt"]:  # one file per image / frame, empty when nothing was found
            name = stem if frame.kind == "image" else f"{stem}_{frame.frame}"
            self.label_files.add(result.save_txt(self.dir / "labels" / f"{name}.txt", o["save_conf"]))
        if o["save_crop"]:
            for c, crop in result.crops():
                folder = self.dir / "crops" / result.names.get(c, str(c))
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(increment_path(folder / f"{stem}.jpg")), crop)
        if o["save_csv"]:
            self.csv_rows += [{"image": frame.path, "frame": frame.frame, **r} for r in result.records()]

    def close(self) -> None:
        self.videos.close()
        if self.opt["save_csv"] and self.n_frames:
            cols = ["image", "frame", "xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
            with open(self.dir / "predictions.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=cols)
                writer.writeheader()
                writer.writerows(self.csv_rows)


def drop_empty(save_dir: Path, created: bool) -> None:
    """Remove the run folder (and its empty labels/) when nothing was written into it and this run made it."""
    labels = save_dir / "labels"
    if labels.is_dir() and not any(labels.iterdir()):
        labels.rmdir()
    if created and save_dir.is_dir() and not any(save_dir.iterdir()):
        save_dir.rmdir()


def _image_shape(file: str) -> tuple[int, int] | None:
    """(h, w) of an image file from its header (as displayed, EXIF rotation applied); None when PIL cannot open it
    (the loader warns about it later)."""
    try:
        with Image.open(file) as im:
            w, h = exif_size(im)
    except Exception:  # any unreadable file: not this check's business
        return None
    return h, w


def check_source_tiles(source: str | Path | list, tile: tuple[int, int]) -> None:
    """--slice on image files, before the model loads: check_tiles on their header sizes. Videos and streams are
    not read ahead (nor a source of only unreadable files: the loader reports those)."""
    if isinstance(source, (str, Path)) and is_stream(str(source)):
        return
    images, videos = collect_files(source)
    shapes = [s for s in map(_image_shape, images) if s is not None]
    if shapes and not videos:
        check_tiles(shapes, tile)


def show_frame(frame: Frame, im: np.ndarray) -> bool:
    """Show a frame in its window; False when the user pressed q."""
    cv2.imshow(str(frame.path), im)
    return cv2.waitKey(1) & 0xFF != ord("q")


def check_opts(
    imgsz: Any,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    device: str,
    classes: Any,
    line_thickness: int | None,
    vid_stride: int,
) -> dict[str, Any]:
    """Every numeric and choice flag, checked before the model is loaded; returns normalised device and classes."""
    if imgsz is not None:  # None: the size the weights were trained at (default_imgsz)
        A.check_imgsz(imgsz, counts=(1, 2), multiple=None)  # rounded up to the model's stride once it is loaded
    A.check_float("conf_thres", conf_thres, 0.0, 1.0, todo="e.g. --conf-thres 0.25")
    A.check_float("iou_thres", iou_thres, 0.0, 1.0, todo="e.g. --iou-thres 0.45")
    A.check_int("max_det", max_det, lo=1, todo="e.g. --max-det 1000")
    if line_thickness is not None:  # None: scaled to the image size
        A.check_int("line_thickness", line_thickness, lo=1, todo="e.g. --line-thickness 3")
    A.check_int("vid_stride", vid_stride, lo=1, todo="1 keeps every frame, 2 every second one")
    return {
        "device": check_device(device),
        "classes": A.check_int_list("classes", classes, lo=0, todo="class indices start at 0"),
    }


def _detect_frames(
    loader: Any, detector: Detector, out: Outputs, view_img: bool, nosave: bool, style: tuple[int | None, bool, bool]
) -> tuple[list[dict], dict[str, float], tuple]:
    """Run every batch of the loader: save, log and (optionally) show each frame; (frames, times, input shape)."""
    frames, totals, shape = [], {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}, ()
    for batch in loader:
        dets = detector([f.image for f in batch], bgr=True)
        shape, keep_going = dets.shape, True
        for k in totals:
            totals[k] += dets.times[k]
        for f, r in zip(batch, dets):
            r.path = f.path
            annotated = r.plot(*style) if view_img or not nosave else None
            out.save(f, r, None if nosave else annotated)
            frames.append({"path": f.path, "frame": f.frame, "boxes": r.boxes})
            h, w = f.image.shape[:2]
            LOGGER.info(f"{f.describe()}{h}x{w} {r.summary()}, {dets.times['inference'] / len(batch):.1f}ms")
            if view_img and annotated is not None:
                keep_going = show_frame(f, annotated) and keep_going
        if not keep_going:
            break
    return frames, totals, shape


def run(
    weights: str | Path | None = None,
    source: str | Path | list = str(ROOT / "data" / "images"),
    imgsz: int | list[int] | tuple[int, ...] | None = None,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
    device: str = "",
    view_img: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_crop: bool = False,
    save_csv: bool = False,
    nosave: bool = False,
    classes: list[int] | None = None,
    agnostic_nms: bool = False,
    augment: bool = False,
    project: str | Path = str(ROOT / "runs" / "detect"),
    name: str = "exp",
    exist_ok: bool = False,
    line_thickness: int = 3,
    hide_labels: bool = False,
    hide_conf: bool = False,
    half: bool = False,
    dnn: bool = False,
    vid_stride: int = 1,
    slice: list[int] | tuple[int, ...] | None = None,
    slice_overlap: float = DEFAULT_OVERLAP,
    slice_merge: str = DEFAULT_MERGE,
) -> dict[str, Any]:
    """Detect on every frame of source; returns save_dir, per-frame boxes and the speed per image (ms). The CLI's
    defaults are these. slice=(W, H): sliced inference (utils/inference/slicing.py) with slice_overlap and
    slice_merge.

    NoUsableInputError (CLI exit code 1) when not a single input could be read."""
    o = check_opts(imgsz, conf_thres, iou_thres, max_det, device, classes, line_thickness, vid_stride)
    classes = o["classes"]
    sliced = slice_config(slice, slice_overlap, slice_merge)
    if sliced is not None:
        check_source_tiles(source, sliced.tile)
    weights = weights or newest_weights()
    detector = Detector(
        weights,
        device=o["device"],
        imgsz=default_imgsz(weights) if imgsz is None else imgsz,
        conf=conf_thres,
        iou=iou_thres,
        classes=classes,
        agnostic=agnostic_nms,
        max_det=max_det,
        fp16=half,
        augment=augment,
        dnn=dnn,
        slice=slice,
        slice_overlap=slice_overlap,
        slice_merge=slice_merge,
    )
    if classes and max(classes) >= detector.nc:
        LOGGER.warning(f"WARNING: --classes {classes}: the model has only {detector.nc} classes (0..{detector.nc - 1})")
    loader = load_source(source, vid_stride=vid_stride)
    if view_img and not display_available():
        LOGGER.warning("WARNING: --view-img needs a display and OpenCV GUI support; not showing results")
        view_img = False
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    created = not save_dir.exists()
    save_dir.mkdir(parents=True, exist_ok=True)
    out = Outputs(
        save_dir, {"save_txt": save_txt, "save_conf": save_conf, "save_crop": save_crop, "save_csv": save_csv}
    )
    detector.warmup()
    try:
        frames, totals, shape = _detect_frames(
            loader, detector, out, view_img, nosave, (line_thickness, hide_labels, hide_conf)
        )
    finally:
        out.close()
        if hasattr(loader, "close"):
            loader.close()
    if not frames:
        drop_empty(save_dir, created)
        raise NoUsableInputError(
            f"--source {source}: not one of its {len(loader)} input(s) could be read (see the "
            f"warnings above) — check that they are valid image or video files"
        )
    return _finish(save_dir, frames, totals, shape, out, nosave)


def _finish(
    save_dir: Path, frames: list[dict], totals: dict[str, float], shape: tuple, out: Outputs, nosave: bool
) -> dict[str, Any]:
    """Log the speed summary and where results went; build run()'s return value."""
    n = max(len(frames), 1)
    speed = {k: v / n for k, v in totals.items()}
    LOGGER.info(
        f"Speed: {speed['preprocess']:.1f}ms pre-process, {speed['inference']:.1f}ms inference, "
        f"{speed['nms']:.1f}ms NMS per image at shape {tuple(shape)}"
    )
    if out.n_labels or not nosave:
        labels = f"\n{out.n_labels} labels saved to {save_dir / 'labels'}" if out.n_labels else ""
        LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}{labels}")
    return {"save_dir": save_dir, "frames": frames, "speed": speed}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """detect.py's flags; every default is run()'s."""
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )
    p.add_argument("--weights", type=str, help="model .pt/.torchscript/.onnx (default: newest best.pt)")
    p.add_argument("--source", type=str, help="file/dir/glob/.txt list/video/webcam index/URL/.streams")
    p.add_argument(
        "--imgsz",
        "--img",
        "--img-size",
        nargs="+",
        type=int,
        help="inference size h,w (default: the training size of a .pt, else 640)",
    )
    p.add_argument("--conf-thres", type=float, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, help="maximum detections per image")
    p.add_argument("--device", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results (needs a display)")
    p.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--save-csv", action="store_true", help="save results to predictions.csv")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="test-time augmentation (scales and flip)")
    p.add_argument("--project", help="save results to project/name")
    p.add_argument("--name", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (CUDA only)")
    p.add_argument("--dnn", action="store_true", help="run an .onnx file with OpenCV DNN")
    p.add_argument("--vid-stride", type=int, help="video frame-rate stride")
    p.add_argument("--slice", nargs="+", type=int, metavar=("W", "H"), help="sliced inference: W x H pixel tiles")
    p.add_argument("--slice-overlap", type=float, help="tile overlap, a fraction of the tile size")
    p.add_argument("--slice-merge", choices=MERGES, help="how tile boxes are merged: nmm (joins cut boxes) or nms")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
