"""Python inference API: model = load_model('best.pt'); results = model(images).

Accepts file paths, numpy arrays (RGB by default, pass bgr=True for cv2 images), PIL images and tensors; letterboxes
and batches them, runs the model (any DetectBackend format) and NMS, and returns boxes in original-image pixels.
detect.py uses the same Detector, so its saved labels are exactly what this API returns.
"""

from __future__ import annotations

import csv
import os
import platform
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from utils.core.boxes import clip_boxes, scale_boxes, xyxy2xywh, xyxy2xywhn
from utils.core.device import select_device
from utils.core.errors import UserError
from utils.core.files import increment_path
from utils.core.image_io import imread, imwrite_atomic
from utils.core.log import LOGGER
from utils.core.plots import Annotator, colors
from utils.core.timing import Profile
from utils.dataloaders.augment import letterbox
from utils.evaluation.nms import non_max_suppression
from utils.inference.backend import DetectBackend, round_imgsz
from utils.inference.slicing import (
    DEFAULT_MERGE,
    DEFAULT_OVERLAP,
    SliceConfig,
    crops_of,
    merge_crops,
    slice_config,
    slice_windows,
)

TTA_SCALES = (1.0, 0.83, 0.67)  # test-time augmentation: YOLOv5's scales, the middle one left-right flipped
TTA_FLIPS = (False, True, False)


@dataclass
class ImageResult:
    """Detections for one image: boxes (n, 6) = x1 y1 x2 y2 conf cls in original pixels (CPU float tensor)."""

    image: np.ndarray  # original image, BGR uint8
    boxes: torch.Tensor
    names: dict[int, str]
    path: str = ""

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def xyxy(self) -> torch.Tensor:
        return self.boxes[:, :4]

    @property
    def conf(self) -> torch.Tensor:
        return self.boxes[:, 4]

    @property
    def cls(self) -> torch.Tensor:
        return self.boxes[:, 5]

    @property
    def xywhn(self) -> torch.Tensor:
        """Boxes as normalised centre x, centre y, width, height (the YOLO label format)."""
        h, w = self.image.shape[:2]
        return xyxy2xywhn(self.xyxy, w=w, h=h)

    def summary(self) -> str:
        """'2 circles, 1 square' (or '(no detections)'), most frequent class first."""
        counts = Counter(int(c) for c in self.cls.tolist())
        parts = [f"{n} {self.names.get(c, str(c))}{'s' * (n > 1)}" for c, n in counts.most_common()]
        return ", ".join(parts) if parts else "(no detections)"

    def label_lines(self, save_conf: bool = False) -> list[str]:
        """YOLO txt lines 'cls cx cy w h [conf]' (normalised), as written by detect.py --save-txt."""
        rows = torch.cat((self.cls[:, None], self.xywhn, self.conf[:, None]), 1).tolist()
        return [(("%g " * (6 if save_conf else 5)).rstrip() % tuple(r[: 6 if save_conf else 5])) for r in rows]

    def save_txt(self, file: str | Path, save_conf: bool = False) -> Path:
        """Write this image's label lines to file (an empty file when nothing was detected)."""
        Path(file).write_text("".join(line + "\n" for line in self.label_lines(save_conf)))
        return Path(file)

    def records(self) -> list[dict[str, Any]]:
        """One dict per box (xmin, ymin, xmax, ymax, confidence, class, name): a pandas-free table."""
        return [
            {
                "xmin": r[0],
                "ymin": r[1],
                "xmax": r[2],
                "ymax": r[3],
                "confidence": r[4],
                "class": int(r[5]),
                "name": self.names.get(int(r[5]), str(int(r[5]))),
            }
            for r in self.boxes.tolist()
        ]

    def plot(self, line_width: int | None = None, hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
        """A copy of the image with boxes and labels drawn in per-class colours (BGR)."""
        ann = Annotator(self.image.copy(), line_width=line_width)
        for *xyxy, conf, c in reversed(self.boxes.tolist()):  # highest confidence drawn last, i.e. on top
            name = self.names.get(int(c), str(int(c)))
            label = None if hide_labels else (name if hide_conf else f"{name} {conf:.2f}")
            ann.box_label(xyxy, label or "", color=colors(int(c), bgr=True))
        return ann.result()

    def crop_box(self, xyxy: Sequence[float], gain: float = 1.02, pad: int = 10) -> np.ndarray:
        """The BGR crop under one box grown by gain and pad pixels (so the object's edge is kept), clipped to the
        image; empty (0 rows or columns) when the box has no area inside the image."""
        b = torch.tensor([float(v) for v in xyxy])
        cxcy, wh = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) * gain + pad
        grown = clip_boxes(torch.cat((cxcy - wh / 2, cxcy + wh / 2))[None], self.image.shape[:2])[0].int().tolist()
        x1, y1, x2, y2 = grown
        return self.image[y1 : max(y1, y2), x1 : max(x1, x2)].copy()

    def crops(self, gain: float = 1.02, pad: int = 10) -> list[tuple[int, np.ndarray]]:
        """(class, BGR crop) per box with a non-empty crop (see crop_box)."""
        pairs = [(int(c), self.crop_box(xyxy, gain, pad)) for *xyxy, _, c in self.boxes.tolist()]
        return [(c, im) for c, im in pairs if im.size]


@dataclass
class Detections:
    """Results of one call: a list of ImageResult plus per-stage times in milliseconds for the whole batch."""

    results: list[ImageResult]
    times: dict[str, float] = field(default_factory=dict)  # "preprocess", "inference", "nms"
    shape: tuple[int, ...] = ()  # the network input shape (B, 3, H, W)
    _rendered: list[np.ndarray] | None = field(default=None, repr=False)  # render()'s images, then `ims`

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ImageResult]:
        return iter(self.results)

    def __getitem__(self, i: int) -> ImageResult:
        return self.results[i]

    def __str__(self) -> str:
        """YOLOv5's text: 'image 1/2: 720x1280 2 persons, 1 tie' per image, then the per-image speed line."""
        lines = [
            f"image {i + 1}/{len(self)}: {r.image.shape[0]}x{r.image.shape[1]} {r.summary()}"
            for i, r in enumerate(self)
        ]
        pre, inf, nms = self.t
        speed = f"Speed: {pre:.1f}ms pre-process, {inf:.1f}ms inference, {nms:.1f}ms NMS per image at shape {self.s}"
        return "\n".join([*lines, speed])

    # YOLOv5's hub-results views: per image an (n, 6) tensor, the box in that format, then confidence and class
    @property
    def xyxy(self) -> list[torch.Tensor]:
        return [r.boxes for r in self.results]

    @property
    def xywh(self) -> list[torch.Tensor]:
        return [torch.cat((xyxy2xywh(r.xyxy), r.boxes[:, 4:]), 1) for r in self.results]

    @property
    def xyxyn(self) -> list[torch.Tensor]:
        return [
            torch.cat((r.xyxy / r.xyxy.new_tensor(r.image.shape[1::-1] * 2), r.boxes[:, 4:]), 1) for r in self.results
        ]

    @property
    def xywhn(self) -> list[torch.Tensor]:
        return [torch.cat((r.xywhn, r.boxes[:, 4:]), 1) for r in self.results]

    @property
    def n(self) -> int:
        return len(self.results)

    def print(self) -> None:
        """YOLOv5's results.print(): str(results) to the log."""
        LOGGER.info(str(self))

    def pandas(self) -> SimpleNamespace:
        """YOLOv5's results.pandas(): .xyxy, .xyxyn, .xywh, .xywhn, each a list (one per image) of DataFrames with
        YOLOv5's columns. pandas is optional here: records() and to_csv() give the same table without it."""
        try:
            import pandas as pd  # optional: only this view needs it
        except ImportError as e:
            raise UserError(
                "results.pandas() needs pandas — pip install pandas, or use results.records() / results.to_csv(file)"
            ) from e
        corners, centres = ["xmin", "ymin", "xmax", "ymax"], ["xcenter", "ycenter", "width", "height"]
        out = SimpleNamespace()
        for view, box_cols in (("xyxy", corners), ("xyxyn", corners), ("xywh", centres), ("xywhn", centres)):
            frames = []
            for r, t in zip(self.results, getattr(self, view)):
                df = pd.DataFrame(t.tolist(), columns=[*box_cols, "confidence", "class"]).astype({"class": int})
                df["name"] = [r.names.get(c, str(c)) for c in df["class"]]
                frames.append(df)
            setattr(out, view, frames)
        return out

    def records(self) -> list[dict[str, Any]]:
        """All boxes of all images as dicts with an 'image' index column."""
        return [{"image": i, **rec} for i, r in enumerate(self.results) for rec in r.records()]

    def to_csv(self, file: str | Path) -> Path:
        """Write records() as CSV (the columns of YOLOv5's results.pandas().xyxy)."""
        cols = ["image", "xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
        with open(file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows(self.records())
        return Path(file)

    def save(
        self, labels: bool | str | Path = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False
    ) -> Path:
        """Write each annotated image to save_dir (incremented unless exist_ok) under its file name (YOLOv5's
        `files`), never over a file already there (a second a.jpg becomes a2.jpg); returns the folder.
        YOLOv5's argument order; a path as the first argument is taken as save_dir (this API's older save(dir))."""
        if isinstance(labels, (str, Path)):  # a path is never YOLOv5's labels flag
            labels, save_dir = True, labels
        save_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for r, name in zip(self.results, self.files):
            imwrite_atomic(_free_name(save_dir / name), r.plot(hide_labels=not labels))
        LOGGER.info(f"Saved {len(self.results)} image{'s' * (len(self.results) != 1)} to {save_dir}")
        return save_dir

    # ---------------------------------------------------------------- the rest of YOLOv5's hub-results interface
    @property
    def ims(self) -> list[np.ndarray]:
        """The original images as RGB uint8 arrays (YOLOv5's `ims`; render() replaces them with annotated ones)."""
        if self._rendered is not None:
            return self._rendered
        return [np.ascontiguousarray(r.image[..., ::-1]) for r in self.results]

    @property
    def pred(self) -> list[torch.Tensor]:
        """Per image an (n, 6) tensor x1 y1 x2 y2 conf cls in original pixels (what supervision's from_yolov5 reads)."""
        return [r.boxes for r in self.results]

    @property
    def names(self) -> dict[int, str]:
        return self.results[0].names if self.results else {}

    @property
    def files(self) -> list[str]:
        """YOLOv5's rule: the input's file name with a .jpg suffix (what save() writes), image0.jpg, image1.jpg, ...
        for arrays and tensors."""
        return [Path(r.path or f"image{i}").with_suffix(".jpg").name for i, r in enumerate(self.results)]

    @property
    def t(self) -> tuple[float, float, float]:
        """Per-image milliseconds of pre-process, inference and NMS (YOLOv5's `t`)."""
        n = max(len(self.results), 1)
        return tuple(self.times.get(k, 0.0) / n for k in ("preprocess", "inference", "nms"))  # type: ignore[return-value]

    @property
    def s(self) -> tuple[int, ...]:
        """The network input shape (B, 3, H, W) (YOLOv5's `s`)."""
        return tuple(self.shape)

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Draw the boxes (with labels unless labels=False); the annotated RGB images, which `ims` then holds."""
        self._rendered = [np.ascontiguousarray(r.plot(hide_labels=not labels)[..., ::-1]) for r in self.results]
        return self._rendered

    def show(self, labels: bool = True) -> None:
        """Show the annotated images in a window; without a display (a server, a container) one warning instead."""
        if not display_available():
            LOGGER.warning("WARNING: results.show() needs a display and OpenCV GUI support; use results.save()")
            return
        for r, name in zip(self.results, self.files):
            cv2.imshow(name, r.plot(hide_labels=not labels))
        cv2.waitKey(1)

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """YOLOv5's crop(): per box a dict(box, conf, cls, label, im) as YOLOv5 builds it (box a list of four 0-d
        tensors, conf and cls 0-d tensors, im the BGR crop; each image's boxes lowest confidence first); with
        save=True each non-empty crop is written to save_dir/crops/<class name>/<file name>, never over a file."""
        out_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True) if save else None
        crops = []
        for r, name in zip(self.results, self.files):
            for *box, conf, cls in reversed(r.boxes):  # YOLOv5's order, so code indexing its list gets the same box
                cname = r.names.get(int(cls), str(int(cls)))
                im = r.crop_box(box)
                crops.append({"box": box, "conf": conf, "cls": cls, "label": f"{cname} {float(conf):.2f}", "im": im})
                if out_dir is not None and im.size:
                    imwrite_atomic(_free_name(out_dir / "crops" / cname / name), im)
        if out_dir is not None:
            LOGGER.info(f"Saved results to {out_dir}")
        return crops

    def tolist(self) -> list[Detections]:
        """One Detections per image, each complete: its own image, boxes and file name, the per-image times (so its
        `t` equals this one's) and the batch's input shape `s` (the tensor it went through, as YOLOv5 keeps it)."""
        n = max(len(self.results), 1)
        per_image = {k: v / n for k, v in self.times.items()}
        return [
            Detections([ImageResult(r.image, r.boxes, r.names, r.path or name)], dict(per_image), self.s)
            for r, name in zip(self.results, self.files)  # an array keeps its batch name (image1.jpg), as YOLOv5's
        ]


def _free_name(path: Path) -> Path:
    """path, or path with 2, 3, ... before its suffix when a file of that name exists (a.jpg -> a2.jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n, out = 2, path
    while out.exists():
        out, n = path.with_name(f"{path.stem}{n}{path.suffix}"), n + 1
    return out


def display_available() -> bool:
    """True when cv2 can open a window: a display exists and OpenCV was built with GUI support."""
    if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False  # GTK would abort the whole process without a display, so never try
    try:
        cv2.namedWindow("__probe__", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("__probe__")
        return True
    except cv2.error:  # opencv-python-headless: no GUI backend
        return False


def _to_bgr(im: Any, bgr: bool) -> tuple[np.ndarray, str]:
    """One input -> (BGR uint8 HxWx3 image, path or '')."""
    if isinstance(im, (str, Path)):
        if not Path(im).is_file():
            raise UserError(f"image not found: {im} — check the path")
        arr = imread(im)
        if arr is None:
            raise UserError(f"{im} is not a readable image")
        return arr, str(im)
    if isinstance(im, torch.Tensor):  # (3,H,W) RGB, float 0-1 or uint8
        t = im.detach().cpu()
        t = (t.float() * 255).round().clamp(0, 255) if t.is_floating_point() else t
        return np.ascontiguousarray(t.byte().permute(1, 2, 0).numpy()[..., ::-1]), ""
    path = ""
    if not isinstance(im, np.ndarray):  # PIL image (or anything array-like): RGB
        path = str(getattr(im, "filename", "") or "")  # Image.open's file names the result, as in YOLOv5
        im = np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
        bgr = False
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (3, 4):
        raise UserError(f"image array of shape {im.shape}: expected HxWx3 (or HxWx4 / HxW) — convert it first")
    im = im[..., :3].astype(np.uint8) if im.dtype != np.uint8 else im[..., :3]
    return np.ascontiguousarray(im if bgr else im[..., ::-1]), path


def as_image_list(images: Any, bgr: bool = False) -> list[tuple[np.ndarray, str]]:
    """Normalise one input or a list (or a (B,3,H,W) tensor) into [(BGR image, path)]."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise UserError("no images given — pass a path, an array, a PIL image or a list of them")
    return [_to_bgr(im, bgr) for im in images]


def _tta_inputs(x: torch.Tensor, stride: int) -> list[tuple[torch.Tensor, float, bool]]:
    """(image, scale, flipped) per TTA view: flip first, then resize and pad right/bottom to a stride multiple."""
    h, w = x.shape[2:]
    views = []
    for s, flip in zip(TTA_SCALES, TTA_FLIPS):
        xi = x.flip(3) if flip else x
        if s != 1.0:
            size = (max(1, int(h * s)), max(1, int(w * s)))  # each side >= 1 px
            xi = F.interpolate(xi, size=size, mode="bilinear", align_corners=False)
            ph, pw = (-xi.shape[2]) % stride, (-xi.shape[3]) % stride
            xi = F.pad(xi, [0, pw, 0, ph], value=0.447)  # YOLOv5's grey (114/255) padding
        views.append((xi, s, flip))
    return views


def tta_forward(backend: DetectBackend, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: predictions of the scaled / flipped views mapped back to x's pixels, concatenated."""
    preds = []
    for xi, s, flip in _tta_inputs(x, backend.stride):
        y = backend(xi).clone()
        y[..., :4] /= s
        if flip:
            y[..., 0] = x.shape[3] - y[..., 0]
        preds.append(y)
    return torch.cat(preds, 1)


class Detector:
    """A loaded model plus pre/post-processing: call it with images, get Detections.

    weights: a model file, or a DetectBackend already loaded. slice=(W, H) runs each image as overlapping W x H tiles
    plus the whole image, merged (utils/inference/slicing.py: small objects in large images); slice, slice_overlap
    and slice_merge can also be set afterwards, as conf can."""

    # class-level defaults, so a Detector built without __init__ (tests' stand-ins) runs unsliced, single-label
    slice: int | Sequence[int] | None = None
    slice_overlap: float = DEFAULT_OVERLAP
    slice_merge: str = DEFAULT_MERGE
    multi_label: bool = False  # NMS may keep several classes per box (val.py's mAP setting)

    def __init__(
        self,
        weights: str | Path | DetectBackend,
        device: str | torch.device = "cpu",
        imgsz: int | Sequence[int] = 640,
        conf: float = 0.25,
        iou: float = 0.45,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        max_det: int = 1000,
        fp16: bool = False,
        augment: bool = False,
        dnn: bool = False,
        slice: int | Sequence[int] | None = None,
        slice_overlap: float = DEFAULT_OVERLAP,
        slice_merge: str = DEFAULT_MERGE,
    ):
        slice_config(slice, slice_overlap, slice_merge)  # a bad value fails before the weights are read
        self.slice, self.slice_overlap, self.slice_merge = slice, slice_overlap, slice_merge
        self.device = select_device(device, verbose=False)
        # an already loaded backend is reused (val.py --slice runs the model it validates)
        loaded = isinstance(weights, DetectBackend)
        self.backend = weights if loaded else DetectBackend(weights, device=self.device, fp16=fp16, dnn=dnn)
        self.names, self.stride, self.nc = self.backend.names, self.backend.stride, self.backend.nc
        self.imgsz = round_imgsz(imgsz, self.stride)
        self.conf, self.iou, self.classes, self.agnostic = conf, iou, classes, agnostic
        self.max_det, self.augment = max_det, augment

    def preprocess(self, ims: list[np.ndarray], imgsz: tuple[int, int] | None = None) -> torch.Tensor:
        """Letterbox BGR images (to imgsz, default self.imgsz) and stack them into a float (B,3,H,W) RGB 0-1 tensor
        on the device."""
        # Minimal (stride-multiple) padding only when all images share a shape and the backend takes any size.
        auto = self.backend.any_shape and all(im.shape == ims[0].shape for im in ims)
        boxed = [letterbox(im, imgsz or self.imgsz, stride=self.stride, auto=auto)[0] for im in ims]
        x = np.ascontiguousarray(np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2))  # BGR->RGB, BHWC->BCHW
        x = torch.from_numpy(x).to(self.device)
        return (x.half() if self.backend.fp16 else x.float()) / 255

    def infer(self, x: torch.Tensor, augment: bool | None = None) -> torch.Tensor:
        """Decoded predictions (B,N,5+nc) for a preprocessed batch."""
        with torch.inference_mode():
            return tta_forward(self.backend, x) if (self.augment if augment is None else augment) else self.backend(x)

    def postprocess(self, pred: torch.Tensor, in_shape: Sequence[int], ims: list[np.ndarray]) -> list[torch.Tensor]:
        """NMS, then boxes from network-input pixels back to each original image's pixels (CPU float)."""
        dets = non_max_suppression(
            pred.float(),
            self.conf,
            self.iou,
            classes=self.classes,
            agnostic=self.agnostic,
            multi_label=self.multi_label,
            max_det=self.max_det,
        )
        out = []
        for det, im in zip(dets, ims):
            det = det.detach().cpu().float().clone()
            det[:, :4] = scale_boxes(in_shape, det[:, :4], im.shape[:2])
            out.append(det)
        return out

    def __call__(
        self, images: Any, size: int | Sequence[int] | None = None, bgr: bool = False, augment: bool | None = None
    ) -> Detections:
        """Detect objects in one image or a list; numpy arrays are RGB unless bgr=True (e.g. from cv2.imread).
        size: this call's inference size (YOLOv5's `model(im, size=640)`; rounded up to the stride), default imgsz."""
        pairs = as_image_list(images, bgr=bgr)
        ims = [im for im, _ in pairs]
        imgsz = round_imgsz(size, self.stride) if size is not None else None
        dt = {k: Profile(self.device) for k in ("preprocess", "inference", "nms")}
        cfg = slice_config(self.slice, self.slice_overlap, self.slice_merge)  # checked again: settable attributes
        if cfg is None:
            dets, shape = self.detect_crops(ims, imgsz, augment, dt)
        else:
            dets, shape = self.detect_sliced(ims, cfg, imgsz, augment, dt)
        results = [ImageResult(im, d, self.names, p) for (im, p), d in zip(pairs, dets)]
        times = {k: timer.t * 1e3 for k, timer in dt.items()}  # ms
        return Detections(results, times, shape)

    def detect_crops(
        self,
        crops: list[np.ndarray],
        imgsz: tuple[int, int] | None = None,
        augment: bool | None = None,
        dt: dict[str, Profile] | None = None,
    ) -> tuple[list[torch.Tensor], tuple[int, ...]]:
        """One batch of BGR images (or crops of one) through preprocess -> infer -> postprocess: ((n, 6) boxes in
        each one's own pixels, the network input shape). dt: a Profile per stage that this batch's times add to."""
        dt = dt or {k: Profile(self.device) for k in ("preprocess", "inference", "nms")}
        with dt["preprocess"]:
            x = self.preprocess(crops, imgsz)
        with dt["inference"]:
            pred = self.infer(x, augment)
        with dt["nms"]:
            dets = self.postprocess(pred, x.shape[2:], crops)
        return dets, tuple(x.shape)

    def detect_sliced(
        self,
        ims: list[np.ndarray],
        cfg: SliceConfig,
        imgsz: tuple[int, int] | None = None,
        augment: bool | None = None,
        dt: dict[str, Profile] | None = None,
    ) -> tuple[list[torch.Tensor], tuple[int, ...]]:
        """Sliced detection of BGR images: per image its tiles (and the whole image) in batches of cfg.batch, then
        the merge, timed as NMS: ((n, 6) boxes in each image's pixels, the last network input shape)."""
        dt = dt or {k: Profile(self.device) for k in ("preprocess", "inference", "nms")}
        out, shape = [], ()
        for im in ims:
            windows = slice_windows(im.shape, cfg)
            crops, dets = crops_of(im, windows), []
            for i in range(0, len(crops), cfg.batch):
                boxes, shape = self.detect_crops(crops[i : i + cfg.batch], imgsz, augment, dt)
                dets += boxes
            with dt["nms"]:
                merged = merge_crops(dets, windows, cfg, imgsz or self.imgsz, self.iou, self.agnostic, self.max_det)
            out.append(merged)
        return out, shape

    def warmup(self) -> None:
        """One dummy run at the working size (GPU / ONNX) so the first image's time is representative."""
        self.backend.warmup((1, 3, *self.imgsz))


def load_model(weights: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Detector:
    """A ready Detector for a .pt / .torchscript / .onnx file; kwargs: imgsz, conf, iou, classes, agnostic,
    max_det, fp16, augment, dnn, slice, slice_overlap, slice_merge (see Detector)."""
    return Detector(weights, device=device, **kwargs)
