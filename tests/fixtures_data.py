"""Data fixtures: a tiny shapes dataset generated once per test session (other areas' tests use shapes_yaml), and
small images, videos and datasets written on demand (solid rectangles whose labels can be checked against pixels)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

TINY = dict(n_train=32, n_val=16, imgsz=128, seed=0)  # small enough to generate in ~1 s


def write_shapes_yaml(root: Path, file: Path) -> Path:
    """A dataset yaml for a generated shapes dataset at root (absolute path, names, val_json)."""
    from data.scripts.make_shapes import NAMES

    data = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "val_json": "annotations/instances_val.json",
        "names": dict(NAMES),
    }
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory) -> Path:
    """Path of a dataset yaml for a TINY shapes dataset (32 train + 16 val images, 128 px, seed 0)."""
    from data.scripts.make_shapes import generate_shapes

    base = tmp_path_factory.mktemp("shapes_data")
    root = generate_shapes(base / "shapes", **TINY)
    return write_shapes_yaml(root, base / "shapes.yaml")


# ------------------------------------------------------------------------------------ datasets of solid rectangles
# one saturated colour per class, far from the black background and from the grey (114) padding
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]


def rect_image(
    root: Path, split: str, name: str, wh: tuple[int, int], box: tuple[int, int, int, int], cls: int, label: bool = True
) -> Path:
    """Black w×h image with a solid rectangle im[y1:y2, x1:x2] of COLOURS[cls] and its YOLO label."""
    w, h = wh
    x1, y1, x2, y2 = box
    im = np.zeros((h, w, 3), np.uint8)
    im[y1:y2, x1:x2] = COLOURS[cls]
    f = root / "images" / split / name
    f.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(f), im)
    if label:
        lb = root / "labels" / split / (Path(name).stem + ".txt")
        lb.parent.mkdir(parents=True, exist_ok=True)
        lb.write_text(f"{cls} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
    return f


def rect_dataset(root: Path, n: int = 6, split: str = "train", wh=(128, 96)) -> Path:
    """n rect_image()s (random boxes seeded by n) under root/images/<split>; returns that folder."""
    rng = np.random.default_rng(n)
    for i in range(n):
        w, h = wh
        x1, y1 = int(rng.integers(2, w // 2)), int(rng.integers(2, h // 2))
        x2, y2 = x1 + int(rng.integers(12, w // 2 - 2)), y1 + int(rng.integers(12, h // 2 - 2))
        rect_image(root, split, f"{i:03d}.png", wh, (x1, y1, x2, y2), i % len(COLOURS))
    return root / "images" / split


# ---------------------------------------------------------------------------------------- inputs for detect.py
def write_images(folder: Path, n: int = 3) -> list[Path]:
    """n random-noise JPEGs of different heights (60, 70, ... x 80) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        files.append(folder / f"img{i}.jpg")
        cv2.imwrite(str(files[-1]), rng.integers(0, 255, (60 + 10 * i, 80, 3), dtype=np.uint8))
    return files


def write_video(path: Path, n: int = 10, size: tuple[int, int] = (96, 64), fps: float = 10) -> Path:
    """An mp4 whose frame k is uniformly grey level 20k, so a frame's identity is readable from its mean."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for k in range(n):
        w.write(np.full((size[1], size[0], 3), 20 * k, np.uint8))
    w.release()
    return path


# ----------------------------------------------------------------------------- augmentation scenes (BGR palette)
# Saturated BGR colours: far from each other, from the black background, from the 114 grey fill and from any blend
# of one colour with black or grey (so edge pixels never pass for another object).
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
PIXEL_TOL = 2.0  # px, the acceptance tolerance of issue #3


def palette_scene(h: int, w: int, rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Black image with solid rectangles (cls, x1, y1, x2, y2) in PALETTE[cls]; labels in pixels (x2 exclusive)."""
    im = np.zeros((h, w, 3), np.uint8)
    for c, x1, y1, x2, y2 in rects:
        im[y1:y2, x1:x2] = PALETTE[c]
    return im, np.array(rects, np.float32).reshape(-1, 5)


def pixel_box(im: np.ndarray, cls: int) -> np.ndarray | None:
    """xyxy box (x2/y2 exclusive) of the pixels whose colour is PALETTE[cls]; None if none."""
    mask = np.abs(im.astype(np.int16) - np.array(PALETTE[cls], np.int16)).max(2) <= 40
    ys, xs = np.nonzero(mask)
    return None if not len(xs) else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def mosaic_inputs(s: int = 128) -> tuple[list[np.ndarray], list[np.ndarray], list[list[np.ndarray]]]:
    """Four images of different shapes (long side s) holding 7 non-overlapping rectangles of distinct colours."""
    specs = [
        ((128, 96), [(0, 10, 12, 50, 60), (1, 40, 80, 90, 120)]),
        ((96, 128), [(2, 5, 5, 60, 40), (3, 70, 40, 120, 90)]),
        ((128, 128), [(4, 20, 20, 100, 50), (5, 30, 70, 70, 118)]),
        ((80, 128), [(6, 30, 10, 110, 70)]),
    ]
    ims, lbs, segs = [], [], []
    for (h, w), rects in specs:
        im, lb = palette_scene(h, w, rects)
        ims.append(im)
        lbs.append(lb)
        segs.append([np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32) for _, x1, y1, x2, y2 in rects])
    return ims, lbs, segs


def check_labels(im: np.ndarray, labels: np.ndarray, interior_only: bool) -> int:
    """Every label's box matches its colour's pixel box within PIXEL_TOL; returns how many labels were compared.

    interior_only: compare only labels not touching the border (for rotated/sheared boxes, whose corner box is only
    exact while the whole shape is visible: a cut rotated shape ends in an acute sliver that blends away)."""
    h, w = im.shape[:2]
    checked = 0
    for c, *box in labels:
        box = np.array(box)
        if interior_only and (box[:2].min() < 1 or box[2] > w - 1 or box[3] > h - 1):  # 1 px: polygon points
            continue
        px = pixel_box(im, int(c))
        assert px is not None, f"label of class {int(c)} {box} has no pixels of its colour"
        assert np.abs(px - box).max() <= PIXEL_TOL, f"class {int(c)}: label {box.round(2)} vs pixels {px}"
        checked += 1
    return checked
