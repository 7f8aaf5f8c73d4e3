"""Mosaic + random perspective in one step, drawing the same random numbers as `mosaic4` + `random_perspective`.

The reference path builds a 2s x 2s canvas of 4 resized images and warps it to s x s. When the drawn matrix has
no rotation, shear or perspective (YOLOv5's hyp.scratch-* files: degrees = shear = perspective = 0) each tile maps
to an axis-aligned rectangle of the output, so it is resized once from the decoded image straight into the output:
no canvas, no resize to s first, no warp of 4 s² pixels. Boxes are computed by the reference code from the same
matrix, so they are identical. Pixels differ by interpolation only: one bilinear resample instead of two, placed on
the output grid to within half an output pixel (cv2.resize keeps the exact scale; only the offset is rounded).
Any other matrix falls back to the canvas and the warp. The HSV jitter can be applied here too (hsv=): per tile,
to its source crop when that is smaller than its output rectangle (256 px images in a 640 mosaic: ~1/5 of the
pixels), with the same lookup tables, so only colour edges differ from jittering the finished mosaic.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from utils.dataloaders.augment import (
    apply_hsv,
    mosaic_canvas,
    mosaic_centre,
    mosaic_labels,
    mosaic_placement,
    perspective_matrix,
    warp_boxes,
    warp_image,
)

FILL = 114
Luts = tuple[np.ndarray, np.ndarray, np.ndarray]


def mosaic_perspective(
    images: list[np.ndarray],
    sizes: list[tuple[int, int]],
    labels: list[np.ndarray],
    segments: list[list[np.ndarray]],
    s: int,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    hsv: Luts | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """= random_perspective(*mosaic4(resized images, ...), border=(-s/2, -s/2)) -> (s x s image, (n, 5) boxes).

    images[i] is the decoded image at any size, sizes[i] the (h, w) it has in the mosaic (long side s), labels[i]
    (n, 5) pixel xyxy and segments[i] pixel polygons, both in those (h, w) pixels.
    hsv: lookup tables from augment.hsv_luts, applied as augment_hsv would be to the result; the fast path applies
    them per tile to the smaller of its source crop and its output rectangle (upscaled tiles: a fraction of the
    pixels), and fills with the jittered grey. Only colour edges differ (jitter before vs after the resampling).
    """
    xc, yc = mosaic_centre(s)
    labels4, segments4 = mosaic_labels(labels, segments, sizes, xc, yc, s)
    M, sc = perspective_matrix((2 * s, 2 * s), (s, s), degrees, translate, scale, shear, perspective)
    if _axis_aligned(M):
        # the jittered grey is still grey (saturation 0 stays 0): a scalar fill, numpy's fast path
        fill = FILL if hsv is None else int(apply_hsv(np.full((1, 1, 3), FILL, np.uint8), hsv)[0, 0, 0])
        img = np.full((s, s, images[0].shape[2]), fill, dtype=np.uint8)
        for i, (im, (h, w)) in enumerate(zip(images, sizes)):
            _place_tile(img, im, (h, w), mosaic_placement(i, xc, yc, w, h, s), M, hsv)
    else:
        resized = [
            im if im.shape[:2] == hw else cv2.resize(im, hw[::-1], interpolation=cv2.INTER_LINEAR)
            for im, hw in zip(images, sizes)
        ]
        img = warp_image(mosaic_canvas(resized, xc, yc, s, FILL), M, (s, s), bool(perspective))
        if hsv is not None:
            apply_hsv(img, hsv, out=img)
    return img, warp_boxes(labels4, segments4, M, sc, (s, s), bool(perspective))


def _axis_aligned(M: np.ndarray) -> bool:
    """x' = a x + c, y' = b y + d with a, b > 0: each tile lands on an axis-aligned rectangle."""
    return (
        M[0, 1] == 0 and M[1, 0] == 0 and M[2, 0] == 0 and M[2, 1] == 0 and M[2, 2] == 1 and M[0, 0] > 0 and M[1, 1] > 0
    )


def _place_tile(
    out: np.ndarray,
    im: np.ndarray,
    hw: tuple[int, int],
    placement: tuple[tuple[int, ...], tuple[int, ...]],
    M: np.ndarray,
    hsv: Luts | None = None,
) -> None:
    """Resize the part of tile im that the output shows straight into out (in place).

    Canvas pixel X of the tile shows tile pixel X - (x1a - x1b) of the (h, w) image, i.e. source pixel
    (X - pad + 0.5) * w_src / w - 0.5 (cv2.resize's pixel-centre convention); output pixel x shows canvas X =
    (x - M[0, 2]) / M[0, 0] (warpAffine's). Both axes are independent, so each is planned on its own."""
    (x1a, y1a, x2a, y2a), (x1b, y1b, _, _) = placement
    xs = _axis_plan(x1a, x2a, x1a - x1b, M[0, 0], M[0, 2], im.shape[1] / hw[1], out.shape[1])
    ys = _axis_plan(y1a, y2a, y1a - y1b, M[1, 1], M[1, 2], im.shape[0] / hw[0], out.shape[0])
    if xs is None or ys is None:  # the tile is outside the output
        return
    (xlo, xhi, cx0, cx1, fx, ox), (ylo, yhi, cy0, cy1, fy, oy) = xs, ys
    crop = _crop_replicate(im, cy0, cy1, cx0, cx1)
    before = hsv is not None and crop.shape[0] * crop.shape[1] < (yhi - ylo) * (xhi - xlo)
    if before:
        crop = apply_hsv(crop, hsv)  # a new array: the crop may be a view of a --cache ram image
    tile = cv2.resize(crop, None, fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)
    roi = out[ylo:yhi, xlo:xhi]
    roi[:] = tile[ylo - oy : yhi - oy, xlo - ox : xhi - ox]
    if hsv is not None and not before:
        apply_hsv(roi, hsv, out=roi)


def _axis_plan(
    a0: int, a1: int, pad: int, m: float, t: float, f: float, n_out: int
) -> tuple[int, int, int, int, float, int] | None:
    """One axis of a tile: output pixels [lo, hi), source crop [c0, c1), resize factor and output offset.

    The tile covers canvas pixels [a0, a1), i.e. canvas coordinates [a0 - .5, a1 - .5), i.e. output pixels
    [lo, hi). Output pixel x shows source coordinate u(x) = alpha * x + beta. The crop is resized by exactly
    1 / alpha, so its pixel d lands at output x = off + d with off real; it is rounded to the output grid (the
    half-pixel difference). The crop has margins so that [lo, hi) lies inside the resized crop after rounding;
    it may reach a pixel or two past the image, where _crop_replicate repeats the edge.
    """
    lo, hi = max(math.ceil(m * (a0 - 0.5) + t), 0), min(math.ceil(m * (a1 - 0.5) + t), n_out)
    if hi <= lo:
        return None
    alpha, beta = f / m, (-t / m - pad + 0.5) * f - 0.5
    c0 = math.floor(alpha * lo + beta) - 1
    c1 = math.ceil(alpha * (hi - 1) + beta + 0.5 + 1.5 * alpha) + 1
    off = (c0 - 0.5 - beta) / alpha + 0.5  # output position of the resized crop's first pixel
    return lo, hi, c0, c1, 1 / alpha, round(off)


def _crop_replicate(im: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """im[y0:y1, x0:x1] where the rectangle may reach past the image: the edge pixels are repeated there."""
    h, w = im.shape[:2]
    crop = im[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    top, bottom, left, right = max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0)
    if top or bottom or left or right:
        crop = cv2.copyMakeBorder(crop, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return crop
