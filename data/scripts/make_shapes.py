"""Generate the embedded 'shapes' detection dataset: offline, deterministic from a seed, YOLO + COCO labels.

Three classes that differ in both shape and colour (circle/red, rectangle/green, triangle/blue, colours jittered),
1-6 objects per image from ~12 px to half the image, overlaps capped so no object is more than 40 % covered,
textured low-saturation backgrounds (gradient + blotches + noise + lines) and a few background-only images.

Usage:
    python data/scripts/make_shapes.py --out datasets/shapes
    python data/scripts/make_shapes.py --samples 3      # detect.py's demo images, data/images/shapes_<k>.jpg
    python data/scripts/make_shapes.py --cls            # the classification set, datasets/shapes-cls/
    from data.scripts.make_shapes import generate_shapes; generate_shapes(Path("datasets/shapes"))
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from any cwd

import cv2
import numpy as np

from utils.core.errors import UserError, cli_main
from utils.core.files import atomic_target
from utils.core.image_io import imwrite_atomic
from utils.core.log import LOGGER
from utils.evaluation.coco import labels_to_coco

NAMES = {0: "circle", 1: "rectangle", 2: "triangle"}
HUES = {0: 0, 1: 60, 2: 115}  # OpenCV hue scale 0-179: red, green, blue
HUE_JITTER = 8
MAX_OBJECTS = 6
MAX_COVER = 0.4  # an earlier object may lose at most this fraction of its pixels to later ones
PLACE_TRIES = 20
BACKGROUND_P = 0.05  # share of background-only images
MIN_SIZE = 12  # px, smallest object extent
JPEG_QUALITY = 90  # fixed, so the same seed gives byte-identical files
SPLITS = ("train", "val")
DATASET_DIR = ROOT / "datasets" / "shapes"
SAMPLES_DIR = ROOT / "data" / "images"  # detect.py's default --source
SAMPLE_STREAM = len(SPLITS)  # samples draw from their own random stream: never an image of the train or val split
SAMPLE_MIN_OBJECTS = 3  # a demo image shows several objects, none touching another's box (see _demo_scene)
SAMPLE_TRIES = 2000  # drawn scenes per sample before giving up (at 256 px about 1 in 4 qualifies)
SAMPLE_QUALITY = 80  # below the dataset's 90: a committed 256 px sample is ~8-12 KB instead of ~17
CLS_DIR = ROOT / "datasets" / "shapes-cls"  # the classification set (data/shapes-cls.yaml)
CLS_STREAM = SAMPLE_STREAM + 1  # its own random streams: no image shared with the detection set or the samples
CLS_EXTENT = (0.35, 0.9)  # the object's extent as a share of the image side (a crop around one object)


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Low-saturation textured background (BGR uint8): gradient + smooth blotches + pixel noise + thin lines."""
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    grey0, grey1 = c0.mean(), c1.mean()
    c0, c1 = grey0 + 0.2 * (c0 - grey0), grey1 + 0.2 * (c1 - grey1)  # pull colours toward grey: objects stand out
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / max(s - 1, 1)
    t = np.cos(ang) * xx + np.sin(ang) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    blotch = cv2.resize(rng.normal(0, 18, (6, 6)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    img += blotch[..., None] + rng.normal(0, rng.uniform(3, 8), (s, s, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # distractor lines (grey-ish, thin)
        p1, p2 = rng.integers(0, s, 2), rng.integers(0, s, 2)
        g = float(rng.uniform(30, 225))
        col = tuple(float(np.clip(g + rng.uniform(-20, 20), 0, 255)) for _ in range(3))
        cv2.line(img, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), col, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _shape_mask(rng: np.random.Generator, cls: int, d: int, s: int) -> np.ndarray:
    """uint8 mask (s, s) of one object of class cls and extent ~d px, placed fully inside the image."""
    mask = np.zeros((s, s), np.uint8)
    if cls == 0:  # circle
        r = max(d // 2, 3)
        cx, cy = rng.integers(r, s - r, 2)
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1, cv2.LINE_8)
        return mask
    if cls == 1:  # axis-aligned rectangle, aspect 1:1 to 2:1 either way
        w, h = d, max(int(d * rng.uniform(0.5, 1.0)), 4)
        if rng.random() < 0.5:
            w, h = h, w
        x0, y0 = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
        cv2.rectangle(mask, (x0, y0), (x0 + w - 1, y0 + h - 1), 1, -1, cv2.LINE_8)
        return mask
    # triangle: rotated, vertices jittered so not every triangle is equilateral
    ang = rng.uniform(0, 2 * np.pi) + np.deg2rad([0, 120, 240]) + np.deg2rad(rng.uniform(-15, 15, 3))
    pts = np.stack([np.cos(ang), np.sin(ang)], 1)
    pts = (pts - pts.min(0)) / (pts.max(0) - pts.min(0)).max() * (d - 1)  # longest side of the box = d
    span = pts.max(0)
    off = np.array([rng.uniform(0, s - 1 - span[0]), rng.uniform(0, s - 1 - span[1])])
    cv2.fillPoly(mask, [np.round(pts + off).astype(np.int32)], 1, cv2.LINE_8)
    return mask


def _colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Saturated BGR colour around the class hue."""
    hsv = np.array(
        [
            [
                [
                    (HUES[cls] + int(rng.integers(-HUE_JITTER, HUE_JITTER + 1))) % 180,
                    int(rng.integers(180, 256)),
                    int(rng.integers(160, 256)),
                ]
            ]
        ],
        np.uint8,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _place_objects(rng: np.random.Generator, s: int) -> tuple[list[np.ndarray], list[int]]:
    """Full masks and classes of the objects of one image, in drawing order (largest first, so the small ones
    land on top); a placement that would cover an earlier object by more than MAX_COVER is retried or dropped."""
    n = 0 if rng.random() < BACKGROUND_P else int(rng.integers(1, MAX_OBJECTS + 1))
    smin = min(MIN_SIZE, s // 4)
    smax = max(s // 2, smin + 1)
    sizes = np.sort(np.exp(rng.uniform(np.log(smin), np.log(smax), n)))[::-1]  # log-uniform: many small objects
    masks: list[np.ndarray] = []
    classes: list[int] = []
    visible: list[np.ndarray] = []
    for d in sizes:
        cls = int(rng.integers(0, len(NAMES)))
        for _ in range(PLACE_TRIES):
            m = _shape_mask(rng, cls, int(round(d)), s).astype(bool)
            keep = [v & ~m for v in visible]
            if all(k.sum() >= (1 - MAX_COVER) * f.sum() for k, f in zip(keep, masks)):
                visible = keep + [m]
                masks.append(m)
                classes.append(cls)
                break
    return masks, classes


def draw_image(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """One s x s BGR image and its YOLO labels (n, 5) [cls cx cy w h] normalised, boxes tight to the object pixels."""
    img = _background(rng, s).astype(np.float32)
    masks, classes = _place_objects(rng, s)
    labels = np.zeros((len(masks), 5))
    for j, (m, cls) in enumerate(zip(masks, classes)):
        img[m] = _colour(rng, cls)
        x, y, w, h = cv2.boundingRect(m.astype(np.uint8))  # box of the full (pre-occlusion) object pixels
        labels[j] = cls, (x + w / 2) / s, (y + h / 2) / s, w / s, h / s
    img += rng.normal(0, 4, img.shape)  # light noise on objects too: no perfectly flat colours
    return np.clip(img, 0, 255).astype(np.uint8), labels


def _apart(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], gap: int) -> bool:
    """True when box (x1, y1, x2, y2) stays at least gap px away from every box in boxes."""
    return all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
               for b in boxes)  # fmt: skip


def draw_canvas(rng: np.random.Generator, w: int, h: int, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One w x h BGR image with one object per extent in sizes (px; drawn largest first, none touching another's
    box) on the dataset's kind of background, and its YOLO labels (n, 5) normalised. For images larger than the
    dataset's (benchmarks/slicing.py: small objects in large images): each object is drawn in a patch of its own
    size, so a 2048 px canvas costs no more per object than a small image. An object that finds no free place in
    PLACE_TRIES draws is left out."""
    img = _background(rng, max(w, h))[:h, :w].astype(np.float32)
    boxes: list[tuple[int, int, int, int]] = []
    labels = []
    for d in np.sort(np.asarray(sizes, float))[::-1]:
        d, cls = int(round(d)), int(rng.integers(0, len(NAMES)))
        p = min(d + 2, w, h)  # the patch: the object plus a pixel of margin each side
        for _ in range(PLACE_TRIES):
            m = _shape_mask(rng, cls, min(d, p - 2), p).astype(bool)
            x, y, bw, bh = cv2.boundingRect(m.astype(np.uint8))
            ox, oy = int(rng.integers(0, w - p + 1)), int(rng.integers(0, h - p + 1))
            box = (ox + x, oy + y, ox + x + bw, oy + y + bh)
            if _apart(box, boxes, gap=2):
                img[oy : oy + p, ox : ox + p][m] = _colour(rng, cls)
                boxes.append(box)
                labels.append((cls, (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h, bw / w, bh / h))
                break
    img += rng.normal(0, 4, img.shape)  # light noise on objects too, as in draw_image
    return np.clip(img, 0, 255).astype(np.uint8), np.array(labels, float).reshape(-1, 5)


def _write_split(root: Path, split: str, ids: range, seed: int, s: int) -> list[tuple[Path, int, int, np.ndarray]]:
    """Write images/<split>/<id>.jpg and labels/<split>/<id>.txt; returns (file, w, h, labels) per image."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    out = []
    for i in ids:
        rng = np.random.default_rng([seed, SPLITS.index(split), i])  # per-image stream: order-independent
        img, labels = draw_image(rng, s)
        f = root / "images" / split / f"{i:06d}.jpg"
        cv2.imwrite(str(f), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        rows = [f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h in labels]
        (root / "labels" / split / f"{i:06d}.txt").write_text("".join(r + "\n" for r in rows))
        out.append((f, s, s, labels))
    return out


def _write_all(root: Path, n_train: int, n_val: int, imgsz: int, seed: int) -> None:
    """Both splits and annotations/instances_val.json (image id = file stem, category id = class index)."""
    _write_split(root, "train", range(1, n_train + 1), seed, imgsz)
    val = _write_split(root, "val", range(n_train + 1, n_train + n_val + 1), seed, imgsz)  # ids unique over splits
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / "instances_val.json", "w") as f:
        json.dump(labels_to_coco(val, NAMES), f)


def _write_dataset(
    root: Path, what: str, write: Callable[..., Any], n_train: int, n_val: int, imgsz: int, seed: int
) -> None:
    """write(folder, n_train, n_val, imgsz, seed) into root: in place when root already has content (our files are
    rewritten, nothing else touched), else into a temp folder renamed into place only when complete."""
    t0 = time.time()
    if root.is_dir() and any(root.iterdir()):
        write(root, n_train, n_val, imgsz, seed)
    else:
        with atomic_target(root, folder=True) as tmp:
            write(tmp, n_train, n_val, imgsz, seed)
    LOGGER.info(
        f"{what} dataset: {n_train} train + {n_val} val images ({imgsz}px, seed {seed}) "
        f"written to {root} in {time.time() - t0:.1f}s"
    )


def generate_shapes(root: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 256, seed: int = 0) -> Path:
    """Generate the shapes dataset under root (images/, labels/, annotations/instances_val.json); returns root.

    Same arguments -> byte-identical files. Into a missing or empty root the data is written in a sibling temp
    folder and renamed at the end, so an interrupted run never leaves a half dataset that looks complete.
    """
    root = Path(root).resolve()
    if imgsz < 32 or n_train < 0 or n_val < 0:
        raise UserError(
            f"generate_shapes: imgsz={imgsz} n_train={n_train} n_val={n_val} — use imgsz >= 32 "
            f"and non-negative image counts"
        )
    _write_dataset(root, "shapes", _write_all, n_train, n_val, imgsz, seed)
    return root


def draw_crop(rng: np.random.Generator, cls: int, s: int) -> np.ndarray:
    """One s x s BGR image of a single object of class cls on a textured background, like a crop around one object
    of the detection set. Its colour is the hue of a random class, so only the shape tells the classes apart."""
    img = _background(rng, s).astype(np.float32)
    m = _shape_mask(rng, cls, int(round(s * rng.uniform(*CLS_EXTENT))), s).astype(bool)
    img[m] = _colour(rng, int(rng.integers(0, len(NAMES))))
    img += rng.normal(0, 4, img.shape)  # light noise on the object too, as in draw_image
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_cls_all(root: Path, n_train: int, n_val: int, s: int, seed: int) -> None:
    """root/<split>/<class>/<id>.jpg; image i of a split shows class i mod 3 (classes within one image of each
    other in size), drawn from its own stream (seed, CLS_STREAM, split, i)."""
    for split, n in zip(SPLITS, (n_train, n_val)):
        for name in NAMES.values():
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cls = i % len(NAMES)
            img = draw_crop(np.random.default_rng([seed, CLS_STREAM, SPLITS.index(split), i]), cls, s)
            cv2.imwrite(str(root / split / NAMES[cls] / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def generate_shapes_cls(
    root: str | Path = CLS_DIR, n_train: int = 300, n_val: int = 90, imgsz: int = 64, seed: int = 0
) -> Path:  # defaults: 100 + 30 images per class, generated in about a second
    """Generate the shapes classification dataset under root (train/<class>/*.jpg, val/<class>/*.jpg); returns root.

    n_train / n_val count images over all classes (split evenly). Same arguments -> byte-identical files. Into a
    missing or empty root the data is written in a sibling temp folder and renamed at the end (atomic_target), so
    an interrupted run never leaves a half dataset that looks complete."""
    root = Path(root).resolve()
    nc = len(NAMES)
    if imgsz < 32 or n_train < nc or n_val < nc:
        raise UserError(
            f"generate_shapes_cls: imgsz={imgsz} n_train={n_train} n_val={n_val} — use imgsz >= 32 and at least "
            f"{nc} images per split (one per class)"
        )
    _write_dataset(root, "shapes-cls", _write_cls_all, n_train, n_val, imgsz, seed)
    return root


def _demo_scene(labels: np.ndarray) -> bool:
    """Several objects and no two boxes overlapping: every object whole and apart, so a demo reads at a glance."""
    if len(labels) < SAMPLE_MIN_OBJECTS:
        return False
    lo, hi = labels[:, 1:3] - labels[:, 3:5] / 2, labels[:, 1:3] + labels[:, 3:5] / 2
    inter = (np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None])).clip(0).prod(2)
    return not (inter > 0)[~np.eye(len(labels), dtype=bool)].any()


def generate_samples(out: str | Path = SAMPLES_DIR, n: int = 3, imgsz: int = 256, seed: int = 0) -> list[Path]:
    """n demo images out/shapes_<k>.jpg (k = 1..n) for detect.py: scenes of the dataset's kind (own random stream)
    with >= SAMPLE_MIN_OBJECTS objects whose boxes do not overlap.

    Same arguments -> byte-identical files; each file is written atomically. No label files: they are inputs only.
    """
    if imgsz < 32 or not 1 <= n <= 100:
        raise UserError(f"generate_samples: imgsz={imgsz} n={n} — use imgsz >= 32 and 1 <= n <= 100")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    i = 0
    while len(files) < n:
        if i >= SAMPLE_TRIES * n:
            raise UserError(
                f"generate_samples: no {n} scenes with {SAMPLE_MIN_OBJECTS}+ separate objects in "
                f"{i} tries at imgsz={imgsz} — use a larger imgsz (e.g. 256)"
            )
        img, labels = draw_image(np.random.default_rng([seed, SAMPLE_STREAM, i]), imgsz)
        i += 1
        if not _demo_scene(labels):
            continue
        f = out / f"shapes_{len(files) + 1}.jpg"
        if not imwrite_atomic(f, img, [cv2.IMWRITE_JPEG_QUALITY, SAMPLE_QUALITY]):
            raise UserError(f"cannot write {f} — check that {out} is writable")
        files.append(f)
    LOGGER.info(f"{n} sample images ({imgsz}px, seed {seed}) written to {out}")
    return files


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Generate the embedded shapes detection dataset")
    p.add_argument(
        "--out",
        "--root",
        dest="root",
        default=None,
        help=f"output folder (default {DATASET_DIR}, {CLS_DIR} with --cls, or {SAMPLES_DIR} with --samples)",
    )
    p.add_argument("--n-train", type=int, default=None, help="number of train images (default 400, --cls 300)")
    p.add_argument("--n-val", type=int, default=None, help="number of val images (default 100, --cls 90)")
    p.add_argument("--imgsz", type=int, default=None, help="image side in pixels, square (default 256, --cls 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--samples", type=int, default=0, help="write this many demo images for detect.py instead")
    p.add_argument("--cls", action="store_true", help="write the classification set (one object per image) instead")
    return p.parse_args(argv)


def run(
    root: str | Path | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    imgsz: int | None = None,
    seed: int = 0,
    samples: int = 0,
    cls: bool = False,
) -> Path:
    """CLI entry: generate_shapes into root (default datasets/shapes), with cls generate_shapes_cls (default
    datasets/shapes-cls), or with samples > 0 generate_samples into root (default data/images); returns the folder.
    Counts and size left None take the chosen generator's defaults."""
    given = {k: v for k, v in dict(n_train=n_train, n_val=n_val, imgsz=imgsz).items() if v is not None}
    if samples:
        out = Path(root) if root is not None else SAMPLES_DIR
        generate_samples(out, n=samples, seed=seed, **{k: v for k, v in given.items() if k == "imgsz"})
        return out
    if cls:
        return generate_shapes_cls(root if root is not None else CLS_DIR, seed=seed, **given)
    return generate_shapes(root if root is not None else DATASET_DIR, seed=seed, **given)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
