"""Image classifiers in Python: load once, call with images, get the top-k classes of each.

    clf = load_classifier("runs/train-cls/exp/weights/best.pt")  # .torchscript / .onnx / _openvino_model/ too,
    results = clf(["a.jpg", "b.jpg"])                            # or an official name such as "convnext_tiny_1k"
    results[0].top1, results[0].top5, results[0].top5conf, results[0].summary()   # 'circle 0.91, triangle 0.05, ...'

Pre-processing is the evaluation transform of training and classify/val.py (resize the short side to imgsz /
crop_ratio, centre-crop imgsz, ImageNet mean/std: utils/dataloaders/classify.build_transforms), so a file predicts
here what it scored there. Model files load through DetectBackend (the same safe loaders as detection).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import trained_imgsz
from models.classifier import ClassificationModel
from models.classifier_weights import load_classifier_weights
from utils.core.device import select_device
from utils.core.errors import UserError
from utils.core.files import ROOT, yaml_load
from utils.core.names import names_dict
from utils.core.timing import Profile
from utils.dataloaders.classify import ClassifyAugment, build_transforms
from utils.inference.api import as_image_list
from utils.inference.backend import DetectBackend

TOPK = 5
DEFAULT_IMGSZ = 224  # a file that records no size: ImageNet's
IMAGENET_NAMES_YAML = ROOT / "data" / "ImageNet.yaml"  # the 1000 ImageNet-1k class names (YOLOv5's file layout)
_OFFICIAL = re.compile(r"(convnext(?:v2)?)_([a-z]+)_(1k|22k|22k_1k)(?:_(224|384))?")  # convnext_tiny_1k, ...
_IMAGENET_22K_CLASSES = 21841  # the official 22k heads


def imagenet_names() -> dict[int, str]:
    """ImageNet-1k's 1000 class names, index -> name (data/ImageNet.yaml)."""
    return names_dict(yaml_load(IMAGENET_NAMES_YAML)["names"])


@dataclass
class ClassifyResult:
    """One image's prediction: probs (nc,) softmax on the CPU, the BGR image, its path ('' for arrays)."""

    image: np.ndarray
    probs: torch.Tensor
    names: dict[int, str]
    path: str = ""

    def topk(self, k: int = TOPK) -> list[int]:
        """Class indices of the k most probable classes, most probable first."""
        return self.probs.topk(min(k, len(self.probs))).indices.tolist()

    @property
    def top1(self) -> int:
        return self.topk(1)[0]

    @property
    def top1conf(self) -> float:
        return float(self.probs[self.top1])

    @property
    def top5(self) -> list[int]:
        return self.topk(TOPK)

    @property
    def top5conf(self) -> list[float]:
        return [float(self.probs[i]) for i in self.top5]

    def name(self, i: int) -> str:
        return self.names.get(i, str(i))

    def summary(self, k: int = TOPK) -> str:
        """'circle 0.91, triangle 0.05, rectangle 0.04' (the top k)."""
        return ", ".join(f"{self.name(i)} {float(self.probs[i]):.2f}" for i in self.topk(k))

    def label_lines(self, k: int = TOPK) -> list[str]:
        """--save-txt lines as YOLOv5 writes them: 'prob name' per top-k entry."""
        return [f"{float(self.probs[i]):.2f} {self.name(i)}" for i in self.topk(k)]

    def plot(self, k: int = TOPK) -> np.ndarray:
        """A copy of the image with the top-k names and probabilities written in its top-left corner (BGR)."""
        im = self.image.copy()
        scale = max(im.shape[:2]) / 640
        size, thick = max(0.4, 0.7 * scale), max(1, round(2 * scale))
        step = int(cv2.getTextSize("Ag", 0, size, thick)[0][1] * 1.8)
        for j, line in enumerate(f"{float(self.probs[i]):.2f} {self.name(i)}" for i in self.topk(k)):
            y = step * (j + 1)
            cv2.putText(im, line, (6, y), 0, size, (0, 0, 0), thick + 2, cv2.LINE_AA)  # outline: legible anywhere
            cv2.putText(im, line, (6, y), 0, size, (255, 255, 255), thick, cv2.LINE_AA)
        return im


def _official_model(name: str, device: torch.device) -> tuple[ClassificationModel, int] | None:
    """(ClassificationModel with its official ImageNet weights, imgsz) for an official name, None otherwise."""
    m = _OFFICIAL.fullmatch(name)
    if m is None or Path(name).exists():
        return None
    nc = _IMAGENET_22K_CLASSES if m[3] == "22k" else 1000
    model = ClassificationModel(f"{m[1]}_{m[2]}", nc=nc)
    load_classifier_weights(model, name)
    if nc == 1000:
        model.names = imagenet_names()
    return model.to(device).eval(), int(m[4] or 224)


class Classifier:
    """A loaded classifier plus its pre-processing: call it with images, get one ClassifyResult per image.

    Attributes: nc, names, source (the weights as given), imgsz, fp16 (inputs must be half), device, backend.
    logits(x) runs a pre-processed (B, 3, imgsz, imgsz) tensor on the device; preprocess(BGR images) makes one."""

    def __init__(
        self,
        weights: str | Path,
        device: str | torch.device = "cpu",
        half: bool = False,
        imgsz: int | None = None,
        crop_ratio: float = 0.875,
        backend: DetectBackend | None = None,
    ):
        """backend: an already loaded DetectBackend of `weights` (torch.hub's custom() loads the file once)."""
        self.device = device if isinstance(device, torch.device) else select_device(device, verbose=False)
        self.source = str(weights)
        official = _official_model(str(weights), self.device) if isinstance(weights, str) else None
        self.backend: Any
        if official is not None:
            self.backend, size = official
            self.fp16 = half and self.device.type == "cuda"  # half only on CUDA, as DetectBackend decides
            self.backend = self.backend.half() if self.fp16 else self.backend
            self.names, self.nc = dict(self.backend.names), self.backend.nc
        else:
            self.backend = backend or DetectBackend(weights, device=self.device, fp16=half)
            if getattr(self.backend, "task", "classify") != "classify" or (
                self.backend.pt and getattr(self.backend.model, "task", "") != "classify"
            ):
                raise UserError(f"{weights} is a detector — use detect.py / val.py, or pass a classifier")
            size = getattr(self.backend, "imgsz", None) or trained_imgsz(weights) or DEFAULT_IMGSZ
            self.fp16, self.names, self.nc = self.backend.fp16, dict(self.backend.names), self.backend.nc
            if self.nc == 1000 and all(v.isdigit() for v in self.names.values()):
                self.names = imagenet_names()
        self.imgsz = int(imgsz or size)
        self.transform = build_transforms(self.imgsz, augment=False, opts=ClassifyAugment(crop_ratio=crop_ratio))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, nc) of a pre-processed batch."""
        with torch.inference_mode():
            return self.backend(x.half() if self.fp16 else x.float())

    def preprocess(self, ims: Sequence[np.ndarray]) -> torch.Tensor:
        """BGR uint8 images -> the evaluation transform's normalised (B, 3, imgsz, imgsz) batch on the device."""
        rgb = [torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))) for im in ims]
        return torch.stack([self.transform(t) for t in rgb]).to(self.device)

    def __call__(self, images: Any, bgr: bool = False) -> list[ClassifyResult]:
        """Classify one image or a list (paths, arrays — RGB unless bgr=True —, PIL images, tensors)."""
        pairs = as_image_list(images, bgr=bgr)
        self.times = [Profile(self.device) for _ in range(3)]  # pre-process, inference, softmax (ms via .t)
        with self.times[0]:
            x = self.preprocess([im for im, _ in pairs])
        with self.times[1]:
            y = self.logits(x)
        with self.times[2]:
            probs = F.softmax(y.float(), dim=1).cpu()
        return [ClassifyResult(im, p, self.names, path) for (im, path), p in zip(pairs, probs)]


def load_classifier(weights: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Classifier:
    """A ready Classifier for a classifier checkpoint, its export, or an official name; kwargs: half, imgsz,
    crop_ratio (see Classifier)."""
    return Classifier(weights, device=device, **kwargs)
