"""COCO json <-> YOLO labels converter (data/scripts/coco_convert.py) on small jsons written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.scripts.coco_convert import coco_to_yolo, yolo_to_coco
from utils.core.errors import UserError
from utils.core.files import ROOT

IMAGES = [  # (id, file name, width, height)
    (42, "000000000042.jpg", 64, 48),
    (7, "street.jpg", 80, 80),
    (9, "000000000009.jpg", 40, 60),  # no annotations -> empty label file
]
ANNS = [  # (image id, category id, [x, y, w, h], iscrowd)
    (42, 3, [8.0, 4.0, 16.0, 20.0], 0),
    (42, 1, [0.0, 0.0, 64.0, 48.0], 0),
    (42, 7, [10.0, 10.0, 5.0, 5.0], 1),  # crowd: skipped
    (7, 7, [70.0, 60.0, 20.0, 30.0], 0),  # runs past the right/bottom edge: clipped to 70..80, 60..80
    (7, 3, [5.0, 5.0, 0.0, 9.0], 0),  # zero width: skipped
]
CATS = [{"id": 7, "name": "truck"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]  # unsorted, with gaps


def write_coco(root: Path) -> Path:
    """A small COCO dataset: images/val/*.jpg (solid grey) and annotations/instances.json."""
    (root / "images" / "val").mkdir(parents=True)
    for _, name, w, h in IMAGES:
        cv2.imwrite(str(root / "images" / "val" / name), np.full((h, w, 3), 114, np.uint8))
    anns = [
        {"id": i + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
        for i, (im, c, b, crowd) in enumerate(ANNS)
    ]
    data = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in IMAGES],
        "annotations": anns,
        "categories": CATS,
    }
    (root / "annotations").mkdir()
    f = root / "annotations" / "instances.json"
    f.write_text(json.dumps(data))
    return f


def rows(file: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in file.read_text().splitlines()]


def test_coco_to_yolo_exact_rows(tmp_path):
    res = coco_to_yolo(write_coco(tmp_path), tmp_path / "labels" / "val")
    assert res == {"images": 3, "boxes": 3, "skipped": 2, "names": {0: "person", 1: "car", 2: "truck"}}
    lab = tmp_path / "labels" / "val"
    assert sorted(p.name for p in lab.iterdir()) == ["000000000009.txt", "000000000042.txt", "street.txt"]
    # category 3 -> class 1, category 1 -> class 0 (ascending id order); centre/size normalised by 64x48
    np.testing.assert_allclose(
        rows(lab / "000000000042.txt"), [[1, 16 / 64, 14 / 48, 16 / 64, 20 / 48], [0, 0.5, 0.5, 1.0, 1.0]], atol=1e-6
    )
    np.testing.assert_allclose(rows(lab / "street.txt"), [[2, 75 / 80, 70 / 80, 10 / 80, 20 / 80]], atol=1e-6)
    assert (lab / "000000000009.txt").read_text() == ""


def test_round_trip_with_reference_json(tmp_path):
    src = write_coco(tmp_path)
    coco_to_yolo(src, tmp_path / "labels" / "val")
    out = yolo_to_coco(tmp_path / "images" / "val", tmp_path / "rt.json", like=src)
    a, b = json.loads(src.read_text()), json.loads(out.read_text())
    assert sorted((i["id"], i["file_name"], i["width"], i["height"]) for i in b["images"]) == sorted(IMAGES)
    assert sorted(c["id"] for c in b["categories"]) == [1, 3, 7]
    kept = [x for x in a["annotations"] if not x["iscrowd"] and x["bbox"][2] > 0]
    kept[-1]["bbox"] = [70.0, 60.0, 10.0, 20.0]  # the clipped box
    key = lambda x: (x["image_id"], x["category_id"])  # noqa: E731
    assert [key(x) for x in sorted(kept, key=key)] == [key(x) for x in sorted(b["annotations"], key=key)]
    for x, y in zip(sorted(kept, key=key), sorted(b["annotations"], key=key)):
        np.testing.assert_allclose(y["bbox"], x["bbox"], atol=1e-3)
    # and back to YOLO again: identical label files
    coco_to_yolo(out, tmp_path / "again")
    for f in (tmp_path / "labels" / "val").iterdir():
        np.testing.assert_allclose(
            np.array(rows(tmp_path / "again" / f.name)).reshape(-1, 5), np.array(rows(f)).reshape(-1, 5), atol=2e-6
        )


def test_yolo_to_coco_default_ids_load_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    coco_to_yolo(write_coco(tmp_path), tmp_path / "labels" / "val")
    out = yolo_to_coco(tmp_path / "images" / "val", tmp_path / "plain.json", names=["person", "car", "truck"])
    c = COCO(str(out))
    assert sorted(c.getCatIds()) == [0, 1, 2]
    ids = sorted(c.getImgIds())
    assert 9 in ids and 42 in ids and len(ids) == 3  # numeric stems -> ids; street.jpg gets a stable hashed id
    assert len(c.getAnnIds(imgIds=[42])) == 2 and not c.getAnnIds(imgIds=[9])


def test_names_from_dataset_yaml_and_bad_inputs(tmp_path):
    coco_to_yolo(write_coco(tmp_path), tmp_path / "labels" / "val")
    out = yolo_to_coco(tmp_path / "images" / "val", tmp_path / "y.json", names=ROOT / "data" / "coco.yaml")
    assert len(json.loads(out.read_text())["categories"]) == 80
    with pytest.raises(UserError, match="not in the 2 class names"):  # class 2 (truck) with only 2 names
        yolo_to_coco(tmp_path / "images" / "val", tmp_path / "z.json", names=["person", "car"])
    with pytest.raises(UserError, match="needs class names"):
        yolo_to_coco(tmp_path / "images" / "val", tmp_path / "z.json")
    with pytest.raises(UserError, match="does not exist"):
        yolo_to_coco(tmp_path / "nope", tmp_path / "z.json", names=["a"])
    (tmp_path / "labels" / "val" / "street.txt").write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(UserError, match="4 columns"):
        yolo_to_coco(tmp_path / "images" / "val", tmp_path / "z.json", names=["a", "b", "c"])
    with pytest.raises(UserError, match="cannot read"):
        coco_to_yolo(tmp_path / "missing.json", tmp_path / "l2")
    (tmp_path / "bad.json").write_text('{"annotations": []}')
    with pytest.raises(UserError, match="not a COCO annotation json"):
        coco_to_yolo(tmp_path / "bad.json", tmp_path / "l2")


def test_orphan_annotations_warn_and_skip(tmp_path, caplog):
    f = write_coco(tmp_path)
    d = json.loads(f.read_text())
    d["annotations"].append({"id": 99, "image_id": 12345, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0})
    f.write_text(json.dumps(d))
    res = coco_to_yolo(f, tmp_path / "labels" / "val")
    assert res["skipped"] == 3 and res["boxes"] == 3
    assert "missing from 'images'" in caplog.text


def test_cli_round_trip_and_error(tmp_path):
    src = write_coco(tmp_path)
    script = ROOT / "data" / "scripts" / "coco_convert.py"
    r = subprocess.run(
        [sys.executable, str(script), "to-yolo", "--json", str(src), "--labels", "lab"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(rows(tmp_path / "lab" / "000000000042.txt")) == 2
    r = subprocess.run(
        [sys.executable, str(script), "to-coco", "--images", "images/val", "--out", "o.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--names" in r.stderr
