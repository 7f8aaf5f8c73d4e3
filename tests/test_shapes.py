"""The embedded shapes dataset: determinism, COCO json vs YOLO labels, classes, size spread, tight boxes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from data.scripts import make_shapes as ms
from utils.core.files import ROOT

CHROMA = 95  # max-min over BGR: objects are >= ~110, backgrounds <= ~80 (low-saturation by design)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_labels(file: Path) -> np.ndarray:
    return np.loadtxt(file, ndmin=2).reshape(-1, 5) if file.stat().st_size else np.zeros((0, 5))


def test_same_seed_identical_files_other_seed_differs(tmp_path):
    a = tree_hashes(ms.generate_shapes(tmp_path / "a", n_train=6, n_val=4, imgsz=96, seed=3))
    b = tree_hashes(ms.generate_shapes(tmp_path / "b", n_train=6, n_val=4, imgsz=96, seed=3))
    c = tree_hashes(ms.generate_shapes(tmp_path / "c", n_train=6, n_val=4, imgsz=96, seed=4))
    assert len(a) == 2 * 10 + 1  # image + label per image, one json
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a if k.startswith("images")) == 10  # every image changes with the seed
    assert not list(tmp_path.glob("*.partial-*"))  # temp folders renamed away


def test_layout_and_numeric_stems(shapes_yaml):
    d = yaml.safe_load(shapes_yaml.read_text())
    root = Path(d["path"])
    for split, n in (("train", 32), ("val", 16)):
        ims = sorted((root / "images" / split).glob("*.jpg"))
        assert len(ims) == n and all(p.stem.isnumeric() for p in ims)
        assert all((root / "labels" / split / f"{p.stem}.txt").is_file() for p in ims)
    train_ids = {int(p.stem) for p in (root / "images" / "train").glob("*.jpg")}
    assert not train_ids & {int(p.stem) for p in (root / "images" / "val").glob("*.jpg")}  # ids unique over splits


def test_coco_json_loads_and_matches_yolo_labels(shapes_yaml):
    from pycocotools.coco import COCO

    d = yaml.safe_load(shapes_yaml.read_text())
    root = Path(d["path"])
    coco = COCO(str(root / d["val_json"]))
    assert sorted(coco.getCatIds()) == [0, 1, 2]  # class index == category id (val.py maps them 1:1)
    assert [c["name"] for c in coco.loadCats([0, 1, 2])] == ["circle", "rectangle", "triangle"]
    ims = sorted((root / "images" / "val").glob("*.jpg"))
    assert sorted(coco.getImgIds()) == [int(p.stem) for p in ims]
    n = 0
    for p in ims:
        info = coco.loadImgs(int(p.stem))[0]
        assert (info["file_name"], info["width"], info["height"]) == (p.name, 128, 128)
        lb = read_labels(root / "labels" / "val" / f"{p.stem}.txt")
        anns = coco.loadAnns(coco.getAnnIds(imgIds=int(p.stem)))
        assert len(anns) == len(lb)
        for a, (c, cx, cy, w, h) in zip(anns, lb):
            assert a["category_id"] == int(c)
            np.testing.assert_allclose(a["bbox"], [(cx - w / 2) * 128, (cy - h / 2) * 128, w * 128, h * 128], atol=1e-3)
        n += len(anns)
    assert n > 16  # 1-6 objects per image on average


def test_every_class_present_and_counts(shapes_yaml):
    root = Path(yaml.safe_load(shapes_yaml.read_text())["path"])
    rows = np.concatenate([read_labels(f) for f in (root / "labels" / "train").glob("*.txt")])
    counts = np.bincount(rows[:, 0].astype(int), minlength=3)
    assert len(counts) == 3 and counts.min() >= 10, counts
    per_image = [len(read_labels(f)) for f in (root / "labels" / "train").glob("*.txt")]
    assert max(per_image) <= ms.MAX_OBJECTS and np.mean(per_image) > 2
    assert rows[:, 1:].min() >= 0 and rows[:, 1:].max() <= 1


def test_size_spread_small_to_half_image():
    sizes = []
    for i in range(24):
        _, lb = ms.draw_image(np.random.default_rng([7, i]), 256)
        sizes += list(lb[:, 3:].max(1) * 256)
    assert min(sizes) < 20 and max(sizes) > 100, (min(sizes), max(sizes))
    assert max(sizes) <= 129  # at most half the image (+1 px for a circle's centre row)


def test_background_only_images_exist():
    empty = sum(len(ms.draw_image(np.random.default_rng([1, i]), 64)[1]) == 0 for i in range(100))
    assert 1 <= empty <= 12  # ~5 %


def colour_box(img: np.ndarray) -> np.ndarray:
    """xyxy (exclusive max) of the strongly coloured pixels of an image."""
    ys, xs = np.nonzero(img.astype(int).max(2) - img.astype(int).min(2) > CHROMA)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_single_object_boxes_are_tight_to_pixels(monkeypatch):
    monkeypatch.setattr(ms, "MAX_OBJECTS", 1)
    monkeypatch.setattr(ms, "BACKGROUND_P", 0.0)
    for i in range(30):
        img, lb = ms.draw_image(np.random.default_rng([5, i]), 128)
        assert len(lb) == 1
        c, cx, cy, w, h = lb[0] * [1, 128, 128, 128, 128]
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        assert np.abs(colour_box(img) - box).max() <= 1, (i, int(c), colour_box(img), box)


def test_every_coloured_pixel_is_inside_a_box():
    for i in range(20):
        img, lb = ms.draw_image(np.random.default_rng([9, i]), 128)
        inside = np.zeros(img.shape[:2], bool)
        for _, cx, cy, w, h in lb * 128:
            inside[round(cy - h / 2) : round(cy + h / 2), round(cx - w / 2) : round(cx + w / 2)] = True
        coloured = img.astype(int).max(2) - img.astype(int).min(2) > CHROMA
        assert not (coloured & ~inside).any(), i  # no unlabelled object, no object outside its box


def test_occlusion_capped(monkeypatch):
    """Re-run the placement and check each object keeps >= 60 % of its pixels after later objects are drawn."""
    for i in range(30):
        masks, _ = ms._place_objects(np.random.default_rng([11, i]), 128)
        for j, m in enumerate(masks):
            covered = np.logical_or.reduce(masks[j + 1 :]) if j + 1 < len(masks) else np.zeros_like(m)
            assert (m & ~covered).sum() >= 0.6 * m.sum() - 1e-9


def test_cli_and_bad_args(tmp_path):
    script = ROOT / "data" / "scripts" / "make_shapes.py"
    r = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "s"), "--n-train", "2", "--n-val", "1", "--imgsz", "64"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "s" / "images" / "train").glob("*.jpg"))) == 2
    assert json.loads((tmp_path / "s" / "annotations" / "instances_val.json").read_text())["images"][0]["id"] == 3
    r = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "t"), "--imgsz", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "imgsz" in r.stderr


def test_shapes_yaml_download_generates(tmp_path, monkeypatch):
    """data/shapes.yaml's download code, run the way check_dataset runs it (yaml dict with an absolute path)."""
    d = yaml.safe_load((ROOT / "data" / "shapes.yaml").read_text())
    assert d["names"] == ms.NAMES and d["val_json"] == "annotations/instances_val.json"
    d["path"] = str(tmp_path / "shapes")
    monkeypatch.setattr(ms, "generate_shapes", lambda root, **kw: kw.update(root=root) or calls.append(kw))
    calls: list[dict] = []
    exec(d["download"], {"yaml": d})
    assert calls == [dict(root=str(tmp_path / "shapes"), n_train=400, n_val=100, imgsz=256, seed=0)]
