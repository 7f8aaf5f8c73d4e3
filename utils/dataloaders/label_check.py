"""Per-image / per-label verification of a YOLO-format dataset, and the label cache next to the labels folder.

Every broken file is named with the reason and skipped; the good images always load (issue #3).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.core.boxes import segments2boxes
from utils.core.files import IMG_FORMATS, atomic_target
from utils.core.image_io import MAX_PIXELS, imread, imwrite_atomic
from utils.core.log import LOGGER

CACHE_VERSION = "label-cache-2"  # bump when the cache content or the checks change
_FLOAT32_MAX = float(np.finfo(np.float32).max)
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


def _open_header(im_file: str) -> tuple[tuple[int, int], str, str]:
    """PIL integrity check without decoding: ((w, h) after EXIF rotation, format, mode)."""
    try:
        with Image.open(im_file) as im:
            im.verify()  # cheap integrity check without decoding all pixels
            fmt = (im.format or "").lower()
        with Image.open(im_file) as im:  # verify() leaves the object unusable: reopen for the size
            return exif_size(im), fmt, im.mode
    except Exception as e:
        raise _Corrupt(f"cannot open image ({type(e).__name__}: {e})") from None


def _restore_truncated_jpeg(im_file: str) -> str:
    """'' for an intact JPEG; a truncated one is decoded (libjpeg fills the rest grey) and re-saved with a valid
    end marker, atomically."""
    with open(im_file, "rb") as f:
        f.seek(-2, 2)
        if f.read() == b"\xff\xd9":
            return ""
    im = imread(im_file)
    if im is None or not imwrite_atomic(im_file, im, [cv2.IMWRITE_JPEG_QUALITY, 100]):
        raise _Corrupt("truncated JPEG that could not be restored")
    return "corrupt JPEG restored and saved"


def _decode_check(im_file: str, fmt: str, mode: str, shape: tuple[int, int]) -> tuple[int, int]:
    """Decode with the loader's reader; returns (w, h) as the loader will see it. JPEG is decoded at 1/8 size (the
    decoder still reads every block, so it fails exactly when a full decode does) within OpenCV's size limits."""
    jpeg = fmt in ("jpeg", "mpo")  # MPO (many camera photos) is JPEG-coded; OpenCV decodes its first image
    if jpeg and shape[0] * shape[1] > MAX_PIXELS:
        raise _Corrupt(f"image size {shape[0]}x{shape[1]} is above OpenCV's decode limit")
    im = imread(im_file, reduce=8 if jpeg else 1)
    if im is None:
        raise _Corrupt(
            f"OpenCV cannot decode this {fmt.upper()} (PIL mode '{mode}') as an 8-bit colour image — "
            f"convert it to 8-bit RGB (e.g. JPEG or PNG)"
        )
    return shape if jpeg else (im.shape[1], im.shape[0])


def _check_image(im_file: str) -> tuple[tuple[int, int], str]:
    """Verify the image as the loader will read it; returns ((w, h), warning). Truncated JPEGs are re-saved."""
    shape, fmt, mode = _open_header(im_file)
    if shape[0] < 10 or shape[1] < 10:
        raise _Corrupt(f"image size {shape[0]}x{shape[1]} is below 10 pixels")
    if fmt not in IMG_FORMATS:
        raise _Corrupt(f"unsupported image format '{fmt}', use one of {IMG_FORMATS}")
    msg = _restore_truncated_jpeg(im_file) if fmt == "jpeg" else ""
    return _decode_check(im_file, fmt, mode, shape), msg


def _parse_rows(lb_file: str) -> list[tuple[int, list[float]]]:
    """Non-blank rows of a label file as (line number, numbers); non-numeric text is corrupt (names the line)."""
    rows = []
    with open(lb_file, errors="replace") as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                values = [float(x) for x in parts]
            except ValueError:
                raise _Corrupt(f"non-numeric value in line {i}: '{line.strip()[:60]}'") from None
            if not all(math.isfinite(v) for v in values):  # nan / inf pass every range check below
                raise _Corrupt(f"non-finite value (nan or inf) in line {i}: '{line.strip()[:60]}'")
            if any(abs(v) > _FLOAT32_MAX for v in values):  # would become inf in the float32 label array
                raise _Corrupt(f"value too large in line {i}: '{line.strip()[:60]}'")
            rows.append((i, values))
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
        raise _Corrupt(f"non-normalized or out of bounds coordinates {lb[:, 1:][lb[:, 1:] > 1].tolist()} (must be 0-1)")
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
        return ImageCheck(
            str(im_file), str(lb_file), corrupt=1, msg=f"{prefix}WARNING ⚠️ {im_file}: ignoring corrupt image/label: {e}"
        )
    except OSError as e:  # unreadable file (permissions, vanished)
        return ImageCheck(
            str(im_file),
            str(lb_file),
            corrupt=1,
            msg=f"{prefix}WARNING ⚠️ {im_file}: ignoring unreadable image/label: {e}",
        )
    r.msg = f"{prefix}WARNING ⚠️ {im_file}: {', '.join(notes)}" if notes else ""
    return r


def files_hash(im_files: list[str], label_files: list[str]) -> str:
    """Hash of the paths and sizes of all images and label files (a missing file counts as size -1)."""
    text = "".join(f"{p}\0{_file_size(p)}\n" for p in list(im_files) + list(label_files))
    return hashlib.sha256(text.encode()).hexdigest()  # = one update per file, without the per-call overhead


def _file_size(p: str) -> int:
    """Size of a regular file, -1 when missing or not a file (one stat: this runs for every file of the dataset)."""
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def cache_path_for(label_files: list[str]) -> Path:
    """<labels dir>.cache, as YOLOv5 names it (labels/train2017 -> labels/train2017.cache)."""
    return Path(label_files[0]).parent.with_suffix(".cache")


@contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's own decoder warnings off while scanning: every file it cannot read gets our one named warning."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(level)


def scan_labels(
    im_files: list[str], label_files: list[str], nc: int | None, prefix: str = "", desc: str = ""
) -> LabelSet:
    """Verify every image/label pair in a thread pool (I/O bound) with a progress bar; keeps the good ones."""
    keep_im, keep_lb, labels, shapes, segments, msgs = [], [], [], [], [], []
    counts = dict(found=0, missing=0, empty=0, corrupt=0, total=len(im_files))
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPool(workers) as pool, _opencv_quiet():
        jobs = [(i, lb, nc, prefix) for i, lb in zip(im_files, label_files)]
        results = pool.imap(lambda a: verify_image_label(*a), jobs)  # looked up at call time (tests patch it)
        bar = tqdm(
            results,
            total=len(im_files),
            desc=desc,
            bar_format="{l_bar}{bar:10}{r_bar}",
            leave=False,
            disable=LOGGER.getEffectiveLevel() > 20,
        )
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


# The cache is plain arrays in one .npz read with allow_pickle=False (a downloaded cache cannot run code). Labels and
# polygon points are concatenated with offset arrays, so 118k images load as a few arrays, not 118k objects.
_ARRAYS = {
    "meta": (np.uint8, 1),
    "labels": (np.float32, 2),
    "label_index": (np.int64, 1),
    "shapes": (np.int64, 2),
    "points": (np.float32, 2),
    "point_index": (np.int64, 1),
    "segment_index": (np.int64, 1),
}
_META = {"version": str, "hash": str, "counts": dict, "im_files": list, "label_files": list, "msgs": list}
_COUNTS = ("found", "missing", "empty", "corrupt", "total")


def _offsets(sizes: list[int]) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.int64)


def _concat(arrays: list[np.ndarray], cols: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(a, np.float32).reshape(-1, cols) for a in arrays] or [np.zeros((0, cols), np.float32)]
    )


def _pack(ls: LabelSet) -> dict[str, np.ndarray]:
    """LabelSet -> the cache's arrays; strings, counts, hash and nc go into one JSON document stored as bytes."""
    segs = [sg for per_image in ls.segments for sg in per_image]
    meta = dict(
        version=ls.version,
        hash=ls.hash,
        nc=ls.nc,
        counts=ls.counts,
        im_files=ls.im_files,
        label_files=ls.label_files,
        msgs=ls.msgs,
    )
    return {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "labels": _concat(ls.labels, 5),
        "label_index": _offsets([len(lb) for lb in ls.labels]),
        "shapes": np.asarray(ls.shapes, np.int64).reshape(-1, 2),
        "points": _concat(segs, 2),
        "point_index": _offsets([len(sg) for sg in segs]),
        "segment_index": _offsets([len(sgs) for sgs in ls.segments]),
    }


def _split(arr: np.ndarray | list, index: np.ndarray, n: int) -> list:
    """arr (array or list) cut at the offsets in index into n pieces; ValueError when index does not fit arr."""
    if len(index) != n + 1 or index[0] != 0 or index[-1] != len(arr) or (np.diff(index) < 0).any():
        raise ValueError("inconsistent offsets")
    bounds = index.tolist()
    return [arr[bounds[i] : bounds[i + 1]] for i in range(n)]


def _unpack(z: Any) -> LabelSet:
    """The arrays of an opened .npz -> LabelSet; ValueError for anything _pack would not have written."""
    if sorted(z.files) != sorted(_ARRAYS):
        raise ValueError(f"unexpected contents {sorted(z.files)[:5]}")
    a = {k: z[k] for k in _ARRAYS}
    if any(a[k].dtype != dt or a[k].ndim != nd for k, (dt, nd) in _ARRAYS.items()):
        raise ValueError("unexpected array types")
    meta = json.loads(a["meta"].tobytes().decode())
    if (
        not isinstance(meta, dict)
        or any(not isinstance(meta.get(k), t) for k, t in _META.items())
        or sorted(meta["counts"]) != sorted(_COUNTS)
    ):
        raise ValueError("unexpected metadata")
    if meta["version"] != CACHE_VERSION:
        raise ValueError(f"version {meta['version'][:40]!r}, expected {CACHE_VERSION!r}")
    n = len(meta["im_files"])
    if (
        len(meta["label_files"]) != n
        or a["shapes"].shape != (n, 2)
        or a["labels"].shape[1] != 5
        or a["points"].shape[1] != 2
    ):
        raise ValueError("inconsistent sizes")
    segs = _split(a["points"], a["point_index"], len(a["point_index"]) - 1)
    per_image = _split(segs, a["segment_index"], n)
    return LabelSet(
        [str(f) for f in meta["im_files"]],
        [str(f) for f in meta["label_files"]],
        _split(a["labels"], a["label_index"], n),
        a["shapes"],
        per_image,
        {k: int(v) for k, v in meta["counts"].items()},
        [str(m) for m in meta["msgs"]],
        hash=meta["hash"],
        nc=meta.get("nc"),
        version=meta["version"],
    )


def _read_cache(path: Path, h: str, nc: int | None, prefix: str = "") -> LabelSet | None:
    """The cached LabelSet when it matches (hash, nc); None when absent or stale (silently: the dataset changed)
    or unreadable / foreign / old (with one warning naming the file). It never runs code from the file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            ls = _unpack(z)
    except Exception as e:  # a pickle, a torch file, truncated, another layout: scan again and replace it
        LOGGER.warning(
            f"{prefix}WARNING ⚠️ {path}: ignoring unusable label cache ({type(e).__name__}: "
            f"{str(e)[:120]}), rebuilding it"
        )
        return None
    return ls if (ls.hash == h and ls.nc == nc) else None


def _save_arrays(file: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(file, "wb") as f:  # a file object: np.savez would append .npz to a path
        np.savez(f, **arrays)


def _write_cache(path: Path, ls: LabelSet, prefix: str) -> None:
    """Atomic write (atomic_target); any failure to write only warns and the run goes on."""
    arrays = _pack(ls)  # outside the try: a packing error is a bug, not a write failure
    try:
        with atomic_target(path) as tmp:
            _save_arrays(tmp, arrays)
        LOGGER.info(f"{prefix}New cache created: {path}")
    except Exception as e:  # read-only folder, disk full, a file system that refuses renames, ...
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        LOGGER.warning(f"{prefix}WARNING ⚠️ cache directory {path.parent} is not writeable, cache not saved ({why})")


def load_labels(
    im_files: list[str], label_files: list[str], nc: int | None, prefix: str = "", cache: bool = True
) -> LabelSet:
    """Verified labels for the images, from <labels dir>.cache when it is current, else scanned and cached.

    Logs one summary line ("Scanning <dir>... N images, M backgrounds, K corrupt") and then each warning.
    """
    path = cache_path_for(label_files) if label_files else None
    where = Path(label_files[0]).parent if label_files else ""
    h = files_hash(im_files, label_files)
    ls = _read_cache(path, h, nc, prefix) if (cache and path) else None
    from_cache = ls is not None
    if ls is None:
        ls = scan_labels(im_files, label_files, nc, prefix, desc=f"{prefix}Scanning {where}")
        ls.hash = h
        if cache and path:
            _write_cache(path, ls, prefix)
    c = ls.counts
    nf = len(ls.im_files)
    LOGGER.info(
        f"{prefix}Scanning {where}... {nf} images, {c['missing'] + c['empty']} backgrounds, "
        f"{c['corrupt']} corrupt{' (from cache)' if from_cache else ''}"
    )
    for m in ls.msgs:
        LOGGER.warning(m)
    return ls
