"""Image augmentation for detection (YOLOv5 semantics): letterbox, random perspective, HSV jitter, mixup, copy-paste.

Boxes are pixel xyxy numpy arrays unless a docstring says otherwise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import cv2
import numpy as np

from utils.core.boxes import clip_boxes, segment2box


def letterbox(
    im: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = True,
    scale_fill: bool = False,
    scaleup: bool = True,
    stride: int = 32,
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
    # (w, h), each side >= 1 px: a 2x3000 image scaled to 640 would otherwise round its height to 0
    new_unpad = (max(1, int(round(shape[1] * r))), max(1, int(round(shape[0] * r))))
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


# ------------------------------------------------------------------------------------------------ mosaic
def mosaic_placement(i: int, xc: int, yc: int, w: int, h: int, s: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Canvas rectangle (x1a, y1a, x2a, y2a) and source rectangle (x1b, y1b, x2b, y2b) of mosaic tile i.

    Tile i touches the centre (xc, yc) with its bottom-right (0), bottom-left (1), top-right (2) or top-left (3)
    corner; the part that falls outside the 2s x 2s canvas is cut off on the side away from the centre.
    """
    left, top = i in (0, 2), i in (0, 1)  # tile lies left / above the centre
    x1a, x2a = (max(xc - w, 0), xc) if left else (xc, min(xc + w, 2 * s))
    y1a, y2a = (max(yc - h, 0), yc) if top else (yc, min(yc + h, 2 * s))
    cw, ch = x2a - x1a, y2a - y1a  # size of the visible part
    x1b = w - cw if left else 0  # keep the corner that touches the centre
    y1b = h - ch if top else 0
    return (x1a, y1a, x2a, y2a), (x1b, y1b, x1b + cw, y1b + ch)


def mosaic_centre(s: int) -> tuple[int, int]:
    """Random mosaic centre (xc, yc), each uniform in [s/2, 3s/2] (Python's `random`; y is drawn first)."""
    yc, xc = (int(random.uniform(s / 2, 3 * s / 2)) for _ in range(2))
    return xc, yc


def mosaic_labels(
    labels: list[np.ndarray], segments: list[list[np.ndarray]], sizes: list[tuple[int, int]], xc: int, yc: int, s: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and polygons of the 4 tiles (image sizes (h, w)) moved onto the 2s x 2s canvas and clipped to it."""
    labels4, segments4 = [], []
    for i, (lb, segs, (h, w)) in enumerate(zip(labels, segments, sizes)):
        (x1a, y1a, _, _), (x1b, y1b, _, _) = mosaic_placement(i, xc, yc, w, h, s)
        padw, padh = x1a - x1b, y1a - y1b  # shift from the source image's pixels to the canvas'
        lb = np.array(lb, dtype=np.float32).reshape(-1, 5).copy()
        lb[:, [1, 3]] += padw
        lb[:, [2, 4]] += padh
        labels4.append(lb)
        segments4.extend(np.asarray(sg, dtype=np.float32) + np.array([padw, padh], dtype=np.float32) for sg in segs)
    labels4 = np.concatenate(labels4, 0)
    np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
    for sg in segments4:
        np.clip(sg, 0, 2 * s, out=sg)
    return labels4, segments4


def mosaic_canvas(images: list[np.ndarray], xc: int, yc: int, s: int, fill: int = 114) -> np.ndarray:
    """The 2s x 2s grey canvas with the 4 images (long side s) placed around the centre (xc, yc)."""
    img4 = np.full((2 * s, 2 * s, images[0].shape[2]), fill, dtype=np.uint8)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b) = mosaic_placement(i, xc, yc, w, h, s)
        img4[y1a:y2a, x1a:x2a] = im[y1b:y2b, x1b:x2b]
    return img4


def mosaic4(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    s: int,
    segments: list[list[np.ndarray]] | None = None,
    fill: int = 114,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Place 4 images (long side already s) around a random centre on a 2s x 2s grey canvas (YOLOv5 mosaic).

    labels[i] is (n, 5) [cls, x1, y1, x2, y2] in pixels of images[i]; segments[i] a list of (k, 2) pixel polygons.
    Returns (img4, labels4 (N, 5) clipped to [0, 2s], segments4 shifted and clipped). The centre is drawn
    uniformly from [s/2, 3s/2] in x and y with Python's `random`.
    """
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(f"mosaic4 needs 4 images and 4 label arrays, got {len(images)} and {len(labels)}")
    segments = segments if segments is not None else [[] for _ in range(4)]
    xc, yc = mosaic_centre(s)
    labels4, segments4 = mosaic_labels(labels, segments, [im.shape[:2] for im in images], xc, yc, s)
    return mosaic_canvas(images, xc, yc, s, fill), labels4, segments4


# ------------------------------------------------------------------------------------------------ geometry
def box_candidates(
    box1: np.ndarray,
    box2: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 100,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Which boxes survive an augmentation: box1 (4, n) before (already scaled), box2 (4, n) after, xyxy.

    Kept when the new box is wider and taller than wh_thr pixels, keeps more than area_thr of its (scaled)
    area, and its aspect ratio (long/short side) is below ar_thr.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def perspective_matrix(
    shape: tuple[int, int],
    out_wh: tuple[int, int],
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    perspective: float,
) -> tuple[np.ndarray, float]:
    """3x3 matrix M = T @ S @ R @ P @ C (YOLOv5's order) and the random scale factor it contains."""
    h, w = shape
    width, height = out_wh
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2  # move the image centre to the origin
    P = np.eye(3)
    P[2, 0], P[2, 1] = random.uniform(-perspective, perspective), random.uniform(-perspective, perspective)
    R = np.eye(3)
    a, sc = random.uniform(-degrees, degrees), random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=a, scale=sc)
    S = np.eye(3)
    S[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))  # x shear
    S[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))  # y shear
    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * width  # centre lands near the output centre
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * height
    return T @ S @ R @ P @ C, sc


def _apply_h(points: np.ndarray, M: np.ndarray, projective: bool) -> np.ndarray:
    """(k, 2) points through the 3x3 matrix M (with the perspective divide when projective)."""
    xy = np.concatenate((points, np.ones((len(points), 1))), 1) @ M.T
    return xy[:, :2] / xy[:, 2:3] if projective else xy[:, :2]


def _resample(segment: np.ndarray, n: int = 1000) -> np.ndarray:
    """Closed polygon (k, 2) -> n points evenly spaced along its index (so edges stay straight when warped)."""
    seg = np.concatenate((segment, segment[:1]), 0)
    t = np.linspace(0, len(seg) - 1, n)
    idx = np.arange(len(seg))
    return np.stack([np.interp(t, idx, seg[:, j]) for j in range(2)], 1)


def random_perspective(
    im: np.ndarray,
    targets: np.ndarray | None = None,
    segments: Sequence[np.ndarray] = (),
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation/perspective of an image and its (n, 5) [cls, x1, y1, x2, y2] boxes.

    Output size is im.shape + 2 * border (mosaic passes border=(-s/2, -s/2) to cut a s x s view from 2s x 2s).
    Boxes are the min/max of the warped corners (or of the warped polygon when segments are given — tighter
    under rotation), clipped to the output; boxes that became tiny, thin or lost most of their area are dropped.
    """
    targets = np.zeros((0, 5)) if targets is None else targets
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = perspective_matrix(im.shape[:2], (width, height), degrees, translate, scale, shear, perspective)
    if border[0] or border[1] or (M != np.eye(3)).any():
        im = warp_image(im, M, (width, height), bool(perspective))
    return im, warp_boxes(targets, segments, M, s, (width, height), bool(perspective))


def warp_image(im: np.ndarray, M: np.ndarray, out_wh: tuple[int, int], projective: bool, fill: int = 114) -> np.ndarray:
    """im through the 3x3 matrix M into an out_wh image, grey where nothing maps."""
    if projective:
        return cv2.warpPerspective(im, M, dsize=out_wh, borderValue=(fill, fill, fill))
    return cv2.warpAffine(im, M[:2], dsize=out_wh, borderValue=(fill, fill, fill))


def warp_boxes(
    targets: np.ndarray,
    segments: Sequence[np.ndarray],
    M: np.ndarray,
    s: float,
    out_wh: tuple[int, int],
    projective: bool,
) -> np.ndarray:
    """The (n, 5) pixel boxes (or their polygons) through M, clipped to out_wh, filtered by box_candidates
    (s is the random scale inside M: the size a box should have had)."""
    width, height = out_wh
    targets = np.asarray(targets, dtype=np.float32).reshape(-1, 5)
    n = len(targets)
    if not n:
        return targets
    use_segments = len(segments) == n and any(len(sg) for sg in segments)
    new = np.zeros((n, 4))
    if use_segments:
        for i, sg in enumerate(segments):
            new[i] = segment2box(_apply_h(_resample(np.asarray(sg, dtype=np.float64)), M, projective), width, height)
    else:
        x1, y1, x2, y2 = targets[:, 1], targets[:, 2], targets[:, 3], targets[:, 4]
        corners = np.stack([np.stack(c, 1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)  # (n, 4, 2)
        xy = _apply_h(corners.reshape(-1, 2).astype(np.float64), M, projective).reshape(n, 4, 2)
        new = np.concatenate((xy.min(1), xy.max(1)), 1)
        clip_boxes(new, (height, width))
    keep = box_candidates(targets[:, 1:5].T * s, new.T, area_thr=0.01 if use_segments else 0.10)
    targets = targets[keep]
    targets[:, 1:5] = new[keep]
    return targets


# ------------------------------------------------------------------------------------------------ colour / mixing
def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value jitter of a BGR uint8 image, in place (lookup tables, like YOLOv5).

    Each channel is multiplied by a factor drawn from [1 - gain, 1 + gain] (hue wraps at 180, cv2's range).
    All gains 0 leaves the image untouched (the HSV round trip itself is lossy, so it is skipped).
    """
    luts = hsv_luts(hgain, sgain, vgain)
    if luts is not None:
        apply_hsv(im, luts, out=im)


def hsv_luts(hgain: float, sgain: float, vgain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The random draw of augment_hsv (numpy's `random`): hue, saturation and value lookup tables; None (and
    nothing drawn) when all gains are 0."""
    if not (hgain or sgain or vgain):
        return None
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    x = np.arange(256, dtype=r.dtype)
    return (
        ((x * r[0]) % 180).astype(np.uint8),
        np.clip(x * r[1], 0, 255).astype(np.uint8),
        np.clip(x * r[2], 0, 255).astype(np.uint8),
    )


def apply_hsv(
    im: np.ndarray, luts: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray | None = None
) -> np.ndarray:
    """BGR uint8 im through the HSV lookup tables of hsv_luts, into out (a new image when None; may be im)."""
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    hsv = cv2.merge((cv2.LUT(hue, luts[0]), cv2.LUT(sat, luts[1]), cv2.LUT(val, luts[2])))
    if out is None:
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=out)
    return out


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with ratio r ~ Beta(32, 32) (about 0.5) and keep both label sets."""
    if im.shape != im2.shape:
        raise ValueError(f"mixup needs images of the same shape, got {im.shape} and {im2.shape}")
    r = np.random.beta(32.0, 32.0)
    out = (im.astype(np.float32) * r + im2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return out, np.concatenate((labels, labels2), 0)


def _ioa(box: np.ndarray, boxes: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Intersection of one xyxy box with each of boxes (n, 4), over the area of each of boxes."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + eps
    return iw * ih / area


def copy_paste(
    im: np.ndarray, labels: np.ndarray, segments: list[np.ndarray], p: float = 0.5
) -> tuple[np.ndarray, np.ndarray, list]:
    """Copy-paste (Ghiasi et al.) as in YOLOv5: round(p * n) random objects are mirrored left-right and pasted.

    An object is pasted only where its mirrored box covers less than 30% of every existing box (ioa < 0.30);
    its pixels (inside the polygon) come from the mirrored image. labels (n, 5) pixel xyxy, segments one (k, 2)
    pixel polygon per label. Returns (im, labels, segments) with the pasted objects appended; p=0 is a no-op.
    """
    n = len(segments)
    if not (p and n):
        return im, labels, segments
    h, w = im.shape[:2]
    labels, segments = np.asarray(labels).copy(), list(segments)
    mask = np.zeros((h, w), dtype=np.uint8)
    for j in random.sample(range(n), k=round(p * n)):
        lb, sg = labels[j], np.asarray(segments[j])
        box = np.array([w - lb[3], lb[2], w - lb[1], lb[4]])  # x mirror: x -> w - x swaps the two x edges
        if (_ioa(box, labels[:, 1:5]) < 0.30).all():
            labels = np.concatenate((labels, [[lb[0], *box]]), 0)
            segments.append(np.concatenate((w - sg[:, :1], sg[:, 1:2]), 1))
            cv2.drawContours(mask, [sg.astype(np.int32)], -1, 1, cv2.FILLED)  # source pixels, mirrored below
    paste = cv2.flip(mask, 1).astype(bool)
    im = im.copy()
    im[paste] = cv2.flip(im, 1)[paste]
    return im, labels, segments


# ------------------------------------------------------------------------------------------------ flips
def flip_lr(im: np.ndarray, labels_xywhn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; labels are normalised [cls, cx, cy, w, h] (new arrays, inputs untouched)."""
    labels = np.array(labels_xywhn, dtype=np.float32).reshape(-1, 5)
    labels[:, 1] = 1 - labels[:, 1]
    return cv2.flip(im, 1), labels  # numpy's reversed-stride copy of 3-byte pixels is ~20x slower


def flip_ud(im: np.ndarray, labels_xywhn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down; labels are normalised [cls, cx, cy, w, h] (new arrays, inputs untouched)."""
    labels = np.array(labels_xywhn, dtype=np.float32).reshape(-1, 5)
    labels[:, 2] = 1 - labels[:, 2]
    return cv2.flip(im, 0), labels
