"""Per-image / per-label verification of a YOLO-format dataset, and the label cache next to the labels folder.

Every broken file is named with the reason and skipped; the good images always load (issue #3).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from utils.boxes import segments2boxes
from utils.log import LOGGER

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
CACHE_VERSION = "label-cache-1"  # bump when the cache content or the checks change
_EXIF_ORIENTATION = 274  # EXIF tag id; values 6 and 8 mean the image is stored rotated by 90 degrees


@dataclass
class ImageCheck:
    """Result of verifying one image and its label file (counts are 0/1 flags, summed over the dataset)."""
    im_file: str
    lb_file: str
    shape: tuple[int, int] | None = None  # (w, h) after EXIF rotation; None when corrupt
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), dtype=np.float32))
    segments: list[np.ndarray] = field(default_factory=list)
    found: int = 0  # label file present and non-empty
    missing: int = 0  # no label file -> background
    empty: int = 0  # empty label file -> background
    corrupt: int = 0
    msg: str = ""  # warning text ("" when none)


@dataclass
class LabelSet:
    """Verified dataset: the good images only, with their labels, shapes and polygons (same order)."""
    im_files: list[str]
    label_files: list[str]
    labels: list[np.ndarray]  # each (n, 5) float32 [cls, cx, cy, w, h] normalised
    shapes: np.ndarray  # (n, 2) original (w, h)
    segments: list[list[np.ndarray]]  # per image: normalised (k, 2) polygons (empty for box labels)
    counts: dict[str, int]  # found / missing / empty / corrupt / total
    msgs: list[str]
    hash: str = ""
    nc: int | None = None
    version: str = CACHE_VERSION


class _Corrupt(Exception):
    """A check failed; the message is the reason shown to the user."""


def exif_size(img: Image.Image) -> tuple[int, int]:
    """(w, h) as displayed: swapped when EXIF says the pixels are stored rotated by 90/270 degrees (cv2 agrees)."""
    w, h = img.size
    try:
        if img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
            w, h = h, w
    except Exception:  # broken EXIF block: the stored size is the best we know
        pass
    return w, h


def _check_image(im_file: str) -> tuple[tuple[int, int], str]:
    """Open + verify the image; returns ((w, h), warning). Truncated JPEGs are re-saved (full quality)."""
    try:
        with Image.open(im_file) as im:
            im.verify()  # cheap integrity check without decoding all pixels
            fmt = (im.format or "").lower()
        with Image.open(im_file) as im:  # verify() leaves the object unusable: reopen for the size
            shape = exif_size(im)
    except Exception as e:
        raise _Corrupt(f"cannot open image ({type(e).__name__}: {e})") from None
    if shape[0] < 10 or shape[1] < 10:
        raise _Corrupt(f"image size {shape[0]}x{shape[1]} is below 10 pixels")
    if fmt not in IMG_FORMATS:
        raise _Corrupt(f"unsupported image format '{fmt}', use one of {IMG_FORMATS}")
    msg = ""
    if fmt in ("jpeg", "jpg"):
        with open(im_file, "rb") as f:
            f.seek(-2, 2)
            intact = f.read() == b"\xff\xd9"
        if not intact:
            # cv2 decodes what is there (libjpeg fills the rest grey); re-saving writes a valid end marker
            im = cv2.imread(im_file)
            if im is None or not cv2.imwrite(im_file, im, [cv2.IMWRITE_JPEG_QUALITY, 100]):
                raise _Corrupt("truncated JPEG that could not be restored")
            msg = "corrupt JPEG restored and saved"
    return shape, msg


def _parse_rows(lb_file: str) -> list[tuple[int, list[float]]]:
    """Non-blank rows of a label file as (line number, numbers); non-numeric text is corrupt (names the line)."""
    rows = []
    with open(lb_file, errors="replace") as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                rows.append((i, [float(x) for x in parts]))
            except ValueError:
                raise _Corrupt(f"non-numeric value in line {i}: '{line.strip()[:60]}'") from None
    return rows


def _rows_to_labels(rows: list[tuple[int, list[float]]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows -> (n, 5) [cls, cx, cy, w, h] and polygons; > 6 columns means polygon rows (cls x1 y1 x2 y2 ...)."""
    if any(len(r) > 6 for _, r in rows):
        for i, r in rows:
            if len(r) < 7 or len(r) % 2 == 0:
                raise _Corrupt(f"polygon labels need a class and at least 3 x y pairs, line {i} has {len(r)} columns")
        classes = np.array([r[0] for _, r in rows], dtype=np.float32)
        segments = [np.array(r[1:], dtype=np.float32).reshape(-1, 2) for _, r in rows]
        return np.concatenate((classes[:, None], segments2boxes(segments)), 1).astype(np.float32), segments
    for i, r in rows:
        if len(r) != 5:
            raise _Corrupt(f"labels require 5 columns, {len(r)} columns detected (line {i})")
    return np.array([r for _, r in rows], dtype=np.float32).reshape(-1, 5), []


def _check_values(lb: np.ndarray, nc: int | None) -> None:
    """Value checks on (n, 5) labels: non-negative, normalised coordinates, class below nc."""
    if (lb < 0).any():
        raise _Corrupt(f"negative label values {lb[lb < 0].tolist()}")
    if (lb[:, 1:] > 1).any():
        raise _Corrupt(f"non-normalized or out of bounds coordinates {lb[:, 1:][lb[:, 1:] > 1].tolist()} "
                       f"(must be 0-1)")
    if nc is not None and (lb[:, 0] >= nc).any():
        raise _Corrupt(f"class {int(lb[:, 0].max())} exceeds nc={nc} (classes must be 0..{nc - 1})")


def verify_image_label(im_file: str, lb_file: str, nc: int | None = None, prefix: str = "") -> ImageCheck:
    """Verify one image and its label file; never raises for bad input (the reason goes into .msg)."""
    r = ImageCheck(str(im_file), str(lb_file))
    notes = []
    try:
        r.shape, note = _check_image(im_file)
        notes += [note] if note else []
        if os.path.isfile(lb_file):
            rows = _parse_rows(lb_file)
            if rows:
                r.found = 1
                lb, segs = _rows_to_labels(rows)
                _check_values(lb, nc)
                _, idx = np.unique(lb, axis=0, return_index=True)
                if len(idx) < len(lb):
                    idx = np.sort(idx)  # keep the first of each duplicate, in file order
                    notes.append(f"{len(lb) - len(idx)} duplicate labels removed")
                    lb, segs = lb[idx], [segs[j] for j in idx] if segs else segs
                r.labels, r.segments = lb, segs
            else:
                r.empty = 1
        else:
            r.missing = 1
    except _Corrupt as e:
        return ImageCheck(str(im_file), str(lb_file), corrupt=1,
                          msg=f"{prefix}WARNING ⚠️ {im_file}: ignoring corrupt image/label: {e}")
    except OSError as e:  # unreadable file (permissions, vanished)
        return ImageCheck(str(im_file), str(lb_file), corrupt=1,
                          msg=f"{prefix}WARNING ⚠️ {im_file}: ignoring unreadable image/label: {e}")
    r.msg = f"{prefix}WARNING ⚠️ {im_file}: {', '.join(notes)}" if notes else ""
    return r


def files_hash(im_files: list[str], label_files: list[str]) -> str:
    """Hash of the paths and sizes of all images and label files (a missing file counts as size -1)."""
    h = hashlib.sha256()
    for p in list(im_files) + list(label_files):
        size = os.path.getsize(p) if os.path.isfile(p) else -1
        h.update(f"{p}\0{size}\n".encode())
    return h.hexdigest()


def cache_path_for(label_files: list[str]) -> Path:
    """<labels dir>.cache, as YOLOv5 names it (labels/train2017 -> labels/train2017.cache)."""
    return Path(label_files[0]).parent.with_suffix(".cache")


def scan_labels(im_files: list[str], label_files: list[str], nc: int | None, prefix: str = "",
                desc: str = "") -> LabelSet:
    """Verify every image/label pair in a thread pool (I/O bound) with a progress bar; keeps the good ones."""
    keep_im, keep_lb, labels, shapes, segments, msgs = [], [], [], [], [], []
    counts = dict(found=0, missing=0, empty=0, corrupt=0, total=len(im_files))
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPool(workers) as pool:
        jobs = [(i, lb, nc, prefix) for i, lb in zip(im_files, label_files)]
        results = pool.imap(lambda a: verify_image_label(*a), jobs)  # looked up at call time (tests patch it)
        bar = tqdm(results, total=len(im_files), desc=desc, bar_format="{l_bar}{bar:10}{r_bar}", leave=False,
                   disable=LOGGER.getEffectiveLevel() > 20)
        for r in bar:
            for k in ("found", "missing", "empty", "corrupt"):
                counts[k] += getattr(r, k)
            if r.msg:
                msgs.append(r.msg)
            if not r.corrupt:
                keep_im.append(r.im_file)
                keep_lb.append(r.lb_file)
                labels.append(r.labels)
                shapes.append(r.shape)
                segments.append(r.segments)
    shapes_arr = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    return LabelSet(keep_im, keep_lb, labels, shapes_arr, segments, counts, msgs, nc=nc)


def _read_cache(path: Path, h: str, nc: int | None) -> LabelSet | None:
    """The cached LabelSet when it matches (version, hash, nc); None when absent, stale, old or unreadable."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=False)  # our own file: plain dict of lists/arrays
        ls = LabelSet(**d)
    except Exception:  # corrupt, truncated or written by an older layout: rebuild
        return None
    return ls if (ls.version == CACHE_VERSION and ls.hash == h and ls.nc == nc) else None


def _write_cache(path: Path, ls: LabelSet, prefix: str) -> None:
    """Atomic write (temp file + os.replace); an unwritable folder only warns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(vars(ls), tmp)
        os.replace(tmp, path)
        LOGGER.info(f"{prefix}New cache created: {path}")
    except OSError as e:
        LOGGER.warning(f"{prefix}WARNING ⚠️ cache directory {path.parent} is not writeable, cache not saved "
                       f"({e.strerror or e})")
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def load_labels(im_files: list[str], label_files: list[str], nc: int | None, prefix: str = "",
                cache: bool = True) -> LabelSet:
    """Verified labels for the images, from <labels dir>.cache when it is current, else scanned and cached.

    Logs one summary line ("Scanning <dir>... N images, M backgrounds, K corrupt") and then each warning.
    """
    path = cache_path_for(label_files) if label_files else None
    where = Path(label_files[0]).parent if label_files else ""
    h = files_hash(im_files, label_files)
    ls = _read_cache(path, h, nc) if (cache and path) else None
    from_cache = ls is not None
    if ls is None:
        ls = scan_labels(im_files, label_files, nc, prefix, desc=f"{prefix}Scanning {where}")
        ls.hash = h
        if cache and path:
            _write_cache(path, ls, prefix)
    c = ls.counts
    nf = len(ls.im_files)
    LOGGER.info(f"{prefix}Scanning {where}... {nf} images, {c['missing'] + c['empty']} backgrounds, "
                f"{c['corrupt']} corrupt{' (from cache)' if from_cache else ''}")
    for m in ls.msgs:
        LOGGER.warning(m)
    return ls
