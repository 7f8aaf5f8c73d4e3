"""Drawing and plotting: box annotation on images, training/validation figures.

Drawing uses OpenCV (fast, no figure overhead); charts use matplotlib with the non-interactive Agg backend so that
plotting works on headless machines and inside DataLoader-free CI runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from utils.log import LOGGER

# A fixed, well-separated palette (hex); class i gets PALETTE[i % len]. Fixed so a class keeps its colour across runs.
_HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
        "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")
_PALETTE = [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in _HEX]  # RGB tuples


def colors(i: int, bgr: bool = False) -> tuple[int, int, int]:
    """Colour of class i as an (R, G, B) tuple, or (B, G, R) for OpenCV images when bgr=True."""
    c = _PALETTE[int(i) % len(_PALETTE)]
    return (c[2], c[1], c[0]) if bgr else c


def _mpl():
    """matplotlib.pyplot on the Agg backend (imported lazily: importing pyplot is slow and opens no window here)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


class Annotator:
    """Draw labelled boxes on a BGR uint8 image with OpenCV.

    Line width and font scale grow with the image size so labels stay readable on 64 px thumbnails and 4K frames.
    """

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3:
            raise TypeError("Annotator expects an HxWx3 uint8 numpy image (BGR)")
        self.im = np.ascontiguousarray(im)  # cv2 drawing needs contiguous memory
        self.lw = line_width or max(round(sum(im.shape[:2]) / 2 * 0.003), 2)
        self.tf = max(self.lw - 1, 1)  # font thickness
        self.fs = self.lw / 3  # font scale

    def box_label(self, box: Sequence[float], label: str = "", color: tuple[int, int, int] = (128, 128, 128),
                  txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """Draw one xyxy box (pixels) and, when given, its label on a filled tag above (or inside) the box."""
        p1 = (int(box[0]), int(box[1]))
        p2 = (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        w, h = cv2.getTextSize(label, 0, fontScale=self.fs, thickness=self.tf)[0]
        outside = p1[1] - h - 3 >= 0  # tag above the box if it fits in the image, else just inside its top
        p2 = (p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(self.im, p1, p2, color, -1, cv2.LINE_AA)
        org = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(self.im, label, org, 0, self.fs, txt_color, thickness=self.tf, lineType=cv2.LINE_AA)

    def text(self, xy: Sequence[float], text: str, txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """Plain text with its top-left corner at xy."""
        h = cv2.getTextSize(text, 0, fontScale=self.fs, thickness=self.tf)[0][1]
        cv2.putText(self.im, text, (int(xy[0]), int(xy[1]) + h), 0, self.fs, txt_color, self.tf, cv2.LINE_AA)

    def result(self) -> np.ndarray:
        """The annotated image (BGR uint8)."""
        return self.im
