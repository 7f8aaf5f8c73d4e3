"""Convert between COCO instances json and YOLO label txt files.

COCO -> YOLO: one `<image stem>.txt` per json image (empty when it has no boxes), rows `class cx cy w h` normalised
to the image size; class = rank of the category id in ascending order (COCO's 1..90 ids -> 0..79), crowd boxes
skipped. YOLO -> COCO: an instances json of a YOLO image folder (category id = class index, or the categories and
image ids of a reference json with --like, which makes the round trip exact).

Usage:
    python data/scripts/coco_convert.py to-yolo --json annotations/instances_val2017.json --labels labels/val2017
    python data/scripts/coco_convert.py to-coco --images images/val2017 --names data/coco.yaml --out val.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from any cwd

import numpy as np
from PIL import Image

from utils.core.errors import UserError, cli_main
from utils.core.files import IMG_FORMATS, find_files, yaml_load
from utils.core.log import LOGGER
from utils.core.names import names_dict
from utils.evaluation.coco import labels_to_coco, load_annotations


def category_classes(categories: list[dict]) -> tuple[dict[int, int], dict[int, str]]:
    """(category id -> class index, class index -> name): classes are the categories in ascending id order."""
    cats = sorted(categories, key=lambda c: int(c["id"]))
    return {int(c["id"]): i for i, c in enumerate(cats)}, {i: str(c.get("name", c["id"])) for i, c in enumerate(cats)}


def _yolo_rows(anns: list[dict], w: float, h: float, cls_of: dict[int, int]) -> tuple[list[str], int]:
    """Label rows of one image's annotations (crowd and degenerate boxes skipped) and the number skipped."""
    rows, skipped = [], 0
    for a in anns:
        x, y, bw, bh = (float(v) for v in a["bbox"])
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)  # clip to the image
        if a.get("iscrowd", 0) or x2 <= x1 or y2 <= y1 or int(a["category_id"]) not in cls_of:
            skipped += 1
            continue
        cx, cy, nw, nh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        rows.append(f"{cls_of[int(a['category_id'])]} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}")
    return rows, skipped


def coco_to_yolo(json_file: str | Path, labels_dir: str | Path) -> dict[str, Any]:
    """Write YOLO label files for every image of a COCO instances json into labels_dir.

    Returns {"images", "boxes", "skipped" (crowd / empty / unknown category), "names" (class index -> name)}.
    """
    data = load_annotations(json_file)
    cls_of, names = category_classes(data["categories"])
    by_image: dict[int, list[dict]] = defaultdict(list)
    for a in data.get("annotations", []):
        by_image[int(a["image_id"])].append(a)
    out = Path(labels_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_boxes = n_skipped = 0
    for im in data["images"]:
        rows, skipped = _yolo_rows(by_image.pop(int(im["id"]), []), float(im["width"]), float(im["height"]), cls_of)
        (out / f"{Path(im['file_name']).stem}.txt").write_text("".join(r + "\n" for r in rows))
        n_boxes, n_skipped = n_boxes + len(rows), n_skipped + skipped
    orphans = sum(len(v) for v in by_image.values())
    if orphans:
        LOGGER.warning(
            f"WARNING ⚠️ {json_file}: {orphans} annotations refer to image ids missing from 'images' — skipped"
        )
    LOGGER.info(
        f"{json_file}: {len(data['images'])} images, {n_boxes} boxes -> {out} "
        f"({n_skipped + orphans} crowd/empty/orphan boxes skipped)"
    )
    return {"images": len(data["images"]), "boxes": n_boxes, "skipped": n_skipped + orphans, "names": names}


def _image_size(file: Path) -> tuple[int, int]:
    """(width, height) as the dataset loader sees the image (EXIF rotation applied), read from the header only."""
    with Image.open(file) as im:
        w, h = im.size
        if im.getexif().get(0x0112) in (5, 6, 7, 8):  # orientation tags that rotate by 90 degrees
            w, h = h, w
    return w, h


def _read_labels(file: Path) -> np.ndarray:
    """(n, 5) rows of a YOLO label file (missing or empty file = no boxes); a broken file is a UserError."""
    if not file.is_file() or not file.stat().st_size:
        return np.zeros((0, 5))
    try:
        rows = np.loadtxt(file, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise UserError(f"{file}: not a YOLO label file ({e}) — rows must be 'class cx cy w h'") from e
    if rows.shape[1] != 5:
        raise UserError(f"{file}: {rows.shape[1]} columns — YOLO box labels have 5 (class cx cy w h)")
    return rows


def _labels_dir_for(images_dir: Path) -> Path:
    """YOLOv5 rule: the last /images/ path component becomes /labels/."""
    parts = list(images_dir.parts)
    if "images" not in parts:
        raise UserError(f"{images_dir} has no 'images' folder in its path — pass --labels")
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1 :])


def _names_from(names: dict | list | str | Path | None) -> dict[int, str] | None:
    """Class names from a dict, a list, or a dataset yaml file (its `names` key)."""
    if isinstance(names, (str, Path)):
        data = yaml_load(names)
        if not isinstance(data, dict) or "names" not in data:
            raise UserError(f"{names}: no 'names' key — pass a dataset yaml with class names")
        names = data["names"]
    return names_dict(names) if names is not None else None


def _apply_reference(coco: dict[str, Any], ref: dict[str, Any]) -> None:
    """Reuse a reference json's categories (class i -> i-th id ascending) and its image ids (by file name)."""
    cat_ids = sorted(int(c["id"]) for c in ref["categories"])
    img_ids = {Path(im["file_name"]).name: int(im["id"]) for im in ref["images"]}
    new_id = {im["id"]: img_ids.get(im["file_name"], im["id"]) for im in coco["images"]}
    for im in coco["images"]:
        im["id"] = new_id[im["id"]]
    for a in coco["annotations"]:
        a["image_id"], a["category_id"] = new_id[a["image_id"]], cat_ids[a["category_id"]]
    coco["categories"] = [dict(c) for c in sorted(ref["categories"], key=lambda c: int(c["id"]))]


def yolo_to_coco(
    images_dir: str | Path,
    out_json: str | Path,
    names: dict | list | str | Path | None = None,
    labels_dir: str | Path | None = None,
    like: str | Path | None = None,
) -> Path:
    """Write a COCO instances json for the images under images_dir and their YOLO labels; returns out_json.

    labels_dir defaults to the images -> labels sibling rule. Category id = class index and image id = numeric
    file stem (utils.evaluation.coco rules), unless `like` names a COCO json whose categories and image ids are reused.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"images folder {images_dir} does not exist — pass --images <folder of images>")
    files = sorted(map(Path, find_files(images_dir, IMG_FORMATS).files))  # the dataset loader's images
    if not files:
        raise UserError(f"no images ({', '.join(IMG_FORMATS)}) under {images_dir}")
    ref = load_annotations(like) if like else None
    names = category_classes(ref["categories"])[1] if ref else _names_from(names)
    if not names:
        raise UserError("yolo_to_coco needs class names — pass --names <data.yaml> or --like <reference.json>")
    labels_dir = Path(labels_dir) if labels_dir else _labels_dir_for(images_dir)
    records = []
    for f in files:
        lf = labels_dir / f.relative_to(images_dir).with_suffix(".txt")
        rows = _read_labels(lf)
        if len(rows) and not set(rows[:, 0].astype(int)) <= set(names):
            raise UserError(
                f"{lf}: class {int(rows[:, 0].max())} is not in the {len(names)} class names — "
                f"pass the names that belong to these labels"
            )
        records.append((f, *_image_size(f), rows))
    coco = labels_to_coco(records, names)
    if ref:
        _apply_reference(coco, ref)
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    LOGGER.info(f"{images_dir}: {len(coco['images'])} images, {len(coco['annotations'])} boxes -> {out}")
    return out


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: a sub-command (to-yolo | to-coco) and its paths."""
    p = argparse.ArgumentParser(description="COCO instances json <-> YOLO label files")
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("to-yolo", help="COCO json -> one YOLO .txt per image")
    a.add_argument("--json", dest="json_file", required=True, help="COCO instances json")
    a.add_argument("--labels", dest="labels_dir", required=True, help="output folder for the .txt files")
    b = sub.add_parser("to-coco", help="YOLO images + labels -> COCO instances json")
    b.add_argument("--images", dest="images_dir", required=True, help="folder of images (searched recursively)")
    b.add_argument("--out", dest="out_json", required=True, help="output json file")
    b.add_argument("--names", default=None, help="dataset yaml whose 'names' are the classes")
    b.add_argument("--labels", dest="labels_dir", default=None, help="labels folder (default: images -> labels)")
    b.add_argument("--like", default=None, help="reference COCO json: reuse its category ids and image ids")
    return p.parse_args(argv)


def run(mode: str, **kw: Any) -> dict[str, Any] | Path:
    """CLI entry: 'to-yolo' (json_file, labels_dir) or 'to-coco' (images_dir, out_json, names, labels_dir, like)."""
    if mode == "to-yolo":
        return coco_to_yolo(kw["json_file"], kw["labels_dir"])
    if mode == "to-coco":
        return yolo_to_coco(
            kw["images_dir"],
            kw["out_json"],
            names=kw.get("names"),
            labels_dir=kw.get("labels_dir"),
            like=kw.get("like"),
        )
    raise UserError(f"unknown mode {mode!r} — use to-yolo or to-coco")


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
