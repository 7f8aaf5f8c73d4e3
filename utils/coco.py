"""COCO json I/O: class-id maps, image ids, detections -> results json, labels -> annotation json, pycocotools eval."""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.errors import UserError
from utils.log import LOGGER


def coco80_to_coco91_class() -> list[int]:
    """Category ids (1..90, with gaps) of the 80 COCO classes, in the order of the 80-class index."""
    gaps = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # ids COCO reserved but never annotated
    ids = [i for i in range(1, 91) if i not in gaps]
    assert len(ids) == 80
    return ids


def class_to_category_map(categories: Sequence[dict], nc: int) -> list[int]:
    """category_id for each of our nc class indices, decided from the annotation file's categories.

    COCO proper (its 80 ids 1..90 with gaps) uses the 80->91 map; ids 0..nc-1 map to themselves; otherwise the
    i-th category by ascending id is class i (the usual convention of COCO-format exports).
    """
    ids = sorted(int(c["id"]) for c in categories)
    if ids == coco80_to_coco91_class() and nc == 80:
        return coco80_to_coco91_class()
    if ids[:nc] == list(range(nc)):
        return list(range(nc))
    if len(ids) < nc:
        raise UserError(f"annotation json has {len(ids)} categories but the dataset has {nc} classes — "
                        f"use the json that belongs to this dataset (val_json in the data yaml)")
    return ids[:nc]


def image_id_for(path: str | Path, name_to_id: dict[str, int] | None = None) -> int:
    """COCO image_id of an image file: its numeric stem (000000397133.jpg -> 397133), else its id in the
    annotation json looked up by file name, else a stable 31-bit hash of the file name (same id every run)."""
    path = Path(path)
    if path.stem.isnumeric():
        return int(path.stem)
    if name_to_id and path.name in name_to_id:
        return name_to_id[path.name]
    return zlib.crc32(path.name.encode()) & 0x7FFFFFFF


def detections_to_coco(detections: torch.Tensor | np.ndarray, image_id: int, class_map: Sequence[int]) -> list[dict]:
    """(n, 6) [x1 y1 x2 y2 conf cls] in original-image pixels -> COCO result dicts (bbox = top-left x, y, w, h)."""
    d = detections.detach().float().cpu().numpy() if isinstance(detections, torch.Tensor) else np.asarray(detections)
    if not len(d):
        return []
    xywh = xyxy2xywh(d[:, :4].astype(np.float64))
    xywh[:, :2] -= xywh[:, 2:] / 2  # centre -> top-left corner
    return [{"image_id": int(image_id), "category_id": int(class_map[int(c)]),
             "bbox": [round(float(v), 3) for v in box], "score": round(float(s), 5)}
            for box, s, c in zip(xywh, d[:, 4], d[:, 5])]


def labels_to_coco(images: Iterable[tuple[str | Path, int, int, np.ndarray]], names: dict[int, str]) -> dict[str, Any]:
    """Build a COCO annotation dict from YOLO labels: images = (file, width, height, labels (n, 5) cls cx cy w h
    normalised). Image ids follow image_id_for, category ids are our class ids (0..nc-1)."""
    out: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(names.items())]}
    for file, w, h, labels in images:
        img_id = image_id_for(file)
        out["images"].append({"id": img_id, "file_name": Path(file).name, "width": int(w), "height": int(h)})
        lb = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
        for cls, cx, cy, bw, bh in lb:
            bw, bh = bw * w, bh * h
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": img_id,
                                       "category_id": int(cls), "bbox": [cx * w - bw / 2, cy * h - bh / 2, bw, bh],
                                       "area": bw * bh, "iscrowd": 0})
    return out


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read a COCO annotation json; a broken file is a UserError naming it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read COCO annotation json {path}: {e} — fix or remove val_json in the data yaml")
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise UserError(f"{path} is not a COCO annotation json (no 'images'/'categories') — check val_json")
    return data


def coco_evaluate(anno_json: str | Path, pred_json: str | Path,
                  image_ids: Sequence[int] | None = None) -> tuple[float, float]:
    """Official pycocotools bbox evaluation; returns (mAP50-95, mAP50) and prints COCOeval's summary table.

    image_ids restricts the evaluation to the images that were actually validated.
    """
    from pycocotools.coco import COCO  # imported here: only --save-json needs pycocotools
    from pycocotools.cocoeval import COCOeval
    with open(pred_json) as f:
        if not json.load(f):
            LOGGER.warning(f"WARNING ⚠️ {pred_json} holds no detections — pycocotools mAP is 0")
            return 0.0, 0.0
    anno = COCO(str(anno_json))
    pred = anno.loadRes(str(pred_json))
    ev = COCOeval(anno, pred, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(set(int(i) for i in image_ids))
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])
