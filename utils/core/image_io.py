"""The one image reader: the label check, the train/val loader and detect all decode files with `imread`.

One reader means an image that passes the label check is an image the loader can read (a float32 TIFF that PIL
opens but OpenCV cannot decode as 8-bit colour is reported at scan time, not halfway through a run).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.core.files import atomic_target, atomic_write

_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# OpenCV's default decode limit (CV_IO_MAX_IMAGE_PIXELS): a full decode above it fails, a reduced one may not, so a
# reduced-size check applies it to the header size itself (JPEG sides are 16-bit, below OpenCV's 2^20 side limit).
MAX_PIXELS = 1 << 30
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG start / end of image markers


def imread(path: str | Path, reduce: int = 1) -> np.ndarray | None:
    """BGR uint8 image, or None when the file is missing or not decodable as 8-bit colour by OpenCV.

    Reads the bytes with numpy (works with non-ASCII paths, unlike cv2.imread). reduce=2/4/8 decodes at 1/reduce
    of the size; for JPEG the decoder itself does that (it still entropy-decodes every block), so it is a faster
    integrity check. For other formats OpenCV decodes in full and then shrinks, so there is nothing to gain.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except (OSError, ValueError):  # missing, unreadable, a folder
        return None
    return decode(data, reduce)


def decode(data: np.ndarray, reduce: int = 1, repair_truncated: bool = True) -> np.ndarray | None:
    """imread for bytes already in memory (uint8 array). repair_truncated=False: a JPEG cut short is None, as the
    server must refuse a partial upload rather than detect on its grey lower half."""
    if not data.size:
        return None
    try:
        im = cv2.imdecode(data, _FLAGS[reduce])
        if im is None and repair_truncated and data[:2].tobytes() == _SOI and data[-2:].tobytes() != _EOI:
            # a truncated JPEG: cv2.imread decodes what is there (libjpeg's file reader adds the end marker),
            # OpenCV's memory reader gives up; adding the marker makes both agree
            im = cv2.imdecode(np.concatenate((data, np.frombuffer(_EOI, np.uint8))), _FLAGS[reduce])
        return im
    except cv2.error:  # OpenCV raises (rather than returning None) for images above its size limits
        return None


def imwrite_atomic(path: str | Path, im: np.ndarray, params: list[int] | None = None) -> bool:
    """Encode im in the format of path's suffix and replace path atomically (atomic_target); False on failure."""
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix or ".jpg", im, params or [])
        if not ok:
            return False
        with atomic_target(path) as tmp:
            buf.tofile(str(tmp))
        return True
    except (OSError, cv2.error):
        return False


def read_npy_image(path: str | Path) -> np.ndarray | None:
    """A --cache disk .npy: BGR uint8 (H, W, 3) pixels, or None when missing, truncated or not an image array (the
    caller then reads the original image). Never unpickles (allow_pickle=False)."""
    f = Path(path)
    try:
        im = np.load(f, allow_pickle=False) if f.exists() else None
    except Exception:  # truncated or foreign .npy
        return None
    return im if (im is not None and im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3) else None


def write_npy_image(path: str | Path, im: np.ndarray) -> int:
    """Write a --cache disk .npy atomically; its size in bytes, or -1 when the folder refuses the write (read-only,
    disk full, ...): the caller then keeps reading the original image."""
    f = Path(path)
    try:
        atomic_write(f, lambda fh: np.save(fh, im))
    except Exception:
        return -1
    return f.stat().st_size
