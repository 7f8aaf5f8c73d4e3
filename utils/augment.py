"""Image augmentation for detection (YOLOv5 semantics): letterbox, random perspective, HSV jitter, mixup, copy-paste.

Boxes are pixel xyxy numpy arrays unless a docstring says otherwise.
"""
from __future__ import annotations

import cv2
import numpy as np


def letterbox(im: np.ndarray, new_shape: int | tuple[int, int] = 640, color: tuple[int, int, int] = (114, 114, 114),
              auto: bool = True, scale_fill: bool = False, scaleup: bool = True, stride: int = 32
              ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w) with grey.

    Returns (image, (ratio_w, ratio_h), (pad_w, pad_h)) where pad is the padding added on *each* side (may be .5).
    auto=True pads only up to the next multiple of `stride` (minimum rectangle, used by inference);
    scale_fill=True stretches to new_shape without padding; scaleup=False only shrinks (better val mAP).
    """
    shape = im.shape[:2]  # (h, w)
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    ratio = (r, r)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))  # (w, h)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    elif scale_fill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape[1], new_shape[0])
        ratio = (new_shape[1] / shape[1], new_shape[0] / shape[0])
    dw, dh = dw / 2, dh / 2  # split the padding between both sides
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, (dw, dh)
