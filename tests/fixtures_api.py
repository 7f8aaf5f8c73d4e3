"""Shared by the Python-API tests: a stand-in backend whose answer is a known function of the input, a Detector
built on it without weights, and the scene it detects."""

from __future__ import annotations

import numpy as np
import torch

from utils.inference.api import Detector


class BrightBoxBackend(torch.nn.Module):
    """Stand-in model that 'detects' the pixels brighter than 0.9 in the red channel as one class-1 box.

    Its answer is a known function of the input, so the API's letterbox / rescale / TTA geometry can be checked exactly.
    """

    stride, names, nc, pt, fp16, any_shape = 32, {0: "a", 1: "b"}, 2, True, False, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for im in x:
            ys, xs = torch.nonzero(im[0] > 0.9, as_tuple=True)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            rows.append(torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]).float())
        box = torch.stack(rows)[:, None]  # (B, 1, 4)
        return torch.cat((box, torch.tensor([1.0, 0.1, 0.95]).expand(len(x), 1, 3)), 2)

    def warmup(self, imgsz: tuple) -> None:
        pass


def stub_detector(**kw) -> Detector:
    det = Detector.__new__(Detector)  # skip weight loading: geometry only
    det.device, det.backend = torch.device("cpu"), BrightBoxBackend()
    det.names, det.stride, det.nc, det.imgsz = det.backend.names, 32, 2, kw.get("imgsz", (64, 64))
    det.conf, det.iou, det.classes, det.agnostic, det.max_det, det.augment = 0.25, 0.45, None, False, 100, False
    return det


def scene(h: int = 60, w: int = 120, box: tuple[int, int, int, int] = (30, 15, 90, 45)) -> np.ndarray:
    """RGB image, dark grey, with a pure red rectangle at box (x1, y1, x2, y2)."""
    im = np.full((h, w, 3), 40, np.uint8)
    im[box[1] : box[3], box[0] : box[2]] = (255, 0, 0)
    return im
