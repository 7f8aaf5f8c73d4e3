"""val.run: the in-memory path train.py uses (model + dataloader + compute_loss), letterbox scaling back to original
pixels, COCO json + pycocotools end to end, plots, and bad input. The CLI tests on the embedded dataset need the
model and data modules."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import val
from utils.core.errors import UserError
from utils.evaluation.coco import labels_to_coco

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "circle", 1: "square"}
IMG = 128  # letterboxed input size
GAIN, PADH = 1.28, 12.8  # 80x100 originals letterboxed into 128x128: scale 1.28, 12.8 px bars top and bottom
# per image: objects as (cls, x1, y1, x2, y2) in ORIGINAL 100x80 pixels
OBJECTS = [
    [(0, 10, 10, 40, 50), (1, 50, 20, 90, 60)],
    [(1, 5, 5, 35, 30)],
    [(0, 20, 30, 70, 75), (0, 60, 5, 95, 40), (1, 0, 40, 30, 79)],
    [],
]  # a background image


class FakeLoader(list):
    """Batches in the dataloader format (imgs uint8, targets, paths, shapes) plus .dataset (for its length)."""

    @property
    def dataset(self):
        return [None] * sum(len(b[2]) for b in self)


class ScriptedModel(torch.nn.Module):
    """Stands in for Model in eval mode: returns queued predictions (B, N, 5+nc) and a raw output for the loss."""

    def __init__(self, preds):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # so val can find the device
        self.stride, self.nc, self.names, self.queue = torch.tensor([8.0, 16.0, 32.0]), 2, dict(NAMES), list(preds)

    def forward(self, x):
        return self.queue.pop(0), [torch.zeros(1, requires_grad=False)]


def _to_input(box):
    """Original-pixel xyxy -> letterboxed input pixels."""
    x1, y1, x2, y2 = box
    return [x1 * GAIN, y1 * GAIN + PADH, x2 * GAIN, y2 * GAIN + PADH]


def _batches(jitter=0.0, seed=0):
    """Two batches of two images; predictions are the objects (optionally jittered in input pixels) with conf."""
    rng = np.random.default_rng(seed)
    shape = ((80, 100), ((GAIN, GAIN), (0.0, PADH)))
    loader, preds = FakeLoader(), []
    for b in range(2):
        targets, pred = [], torch.zeros(2, 8, 7)
        for i in range(2):
            for k, (c, *box) in enumerate(OBJECTS[2 * b + i]):
                x1, y1, x2, y2 = _to_input(box)
                targets.append([i, c, (x1 + x2) / 2 / IMG, (y1 + y2) / 2 / IMG, (x2 - x1) / IMG, (y2 - y1) / IMG])
                w, h = x2 - x1, y2 - y1
                cx, cy = (x1 + x2) / 2 + rng.normal(0, jitter) * w, (y1 + y2) / 2 + rng.normal(0, jitter) * h
                pred[i, k, :5] = torch.tensor(
                    [cx, cy, w * (1 + rng.normal(0, jitter)), h * (1 + rng.normal(0, jitter)), 0.5 + 0.4 * rng.random()]
                )
                pred[i, k, 5 + c] = 1.0
        imgs = torch.zeros(2, 3, IMG, IMG, dtype=torch.uint8)
        paths = [f"/data/images/{2 * b + i:012d}.jpg" for i in range(2)]
        loader.append((imgs, torch.tensor(targets).reshape(-1, 6), paths, [shape, shape]))
        preds.append(pred)
    return loader, preds


def _annotations(tmp_path):
    """COCO annotation json of OBJECTS in original pixels, named in a data dict as val_json."""
    images = []
    for k, objs in enumerate(OBJECTS):
        lb = np.array(
            [[c, (x1 + x2) / 200, (y1 + y2) / 160, (x2 - x1) / 100, (y2 - y1) / 80] for c, x1, y1, x2, y2 in objs]
        ).reshape(-1, 5)
        images.append((f"{k:012d}.jpg", 100, 80, lb))
    (tmp_path / "anno.json").write_text(json.dumps(labels_to_coco(images, NAMES)))
    return {"path": str(tmp_path), "val": "images", "names": NAMES, "nc": 2, "val_json": "anno.json"}


def _run(tmp_path, jitter=0.0, **kw):
    loader, preds = _batches(jitter)
    kw.setdefault("data", {"path": str(tmp_path), "val": "images", "names": NAMES, "nc": 2})
    return val.run(model=ScriptedModel(preds), dataloader=loader, save_dir=tmp_path / "run", **kw)


def test_perfect_predictions_through_letterbox(tmp_path):
    calls = []

    def compute_loss(raw, targets):
        calls.append(len(targets))
        return torch.tensor(0.0), torch.tensor([0.1, 0.2, 0.3])

    (mp, mr, map50, map_, *losses), maps, times = _run(tmp_path, compute_loss=compute_loss)
    assert (mp, mr, map50, map_) == pytest.approx((1.0, 1.0, 1.0, 1.0), abs=1e-6)
    assert losses == pytest.approx([0.1, 0.2, 0.3])  # mean over the 2 batches
    assert calls == [3, 3]
    assert maps.tolist() == pytest.approx([1.0, 1.0]) and len(times) == 3
    for f in (
        "PR_curve.png",
        "F1_curve.png",
        "P_curve.png",
        "R_curve.png",
        "confusion_matrix.png",
        "val_batch0_labels.jpg",
        "val_batch0_pred.jpg",
        "val_batch1_pred.jpg",
    ):
        assert (tmp_path / "run" / f).is_file(), f


def test_save_json_pycocotools_agrees_with_ours(tmp_path, caplog):
    data = _annotations(tmp_path)
    ours = _run(tmp_path, jitter=0.08, data=data, plots=False)[0]
    assert 0.2 < ours[3] < 0.95  # jittered boxes: a non-trivial mAP50-95
    with caplog.at_level(logging.INFO, logger="yolo"):
        coco = _run(tmp_path, jitter=0.08, data=data, plots=False, save_json=True, pycocotools=True)[0]
    assert "pycocotools" in caplog.text
    assert abs(coco[3] - ours[3]) <= 0.005 and abs(coco[2] - ours[2]) <= 0.005
    rows = json.loads((tmp_path / "run" / "_predictions.json").read_text())
    assert len(rows) == 6 and {r["image_id"] for r in rows} == {0, 1, 2}  # numeric stems
    first = min(rows, key=lambda r: (r["image_id"], r["bbox"][0]))
    assert first["bbox"] == pytest.approx([10, 10, 30, 40], abs=3)  # original pixels, top-left xywh


def test_save_txt_in_original_pixels(tmp_path):
    _run(tmp_path, save_txt=True, save_conf=True, plots=False)
    lines = (tmp_path / "run" / "labels" / "000000000001.txt").read_text().split()
    assert [float(v) for v in lines[:5]] == pytest.approx([1, 0.2, 17.5 / 80, 0.3, 25 / 80], abs=1e-3)
    assert 0.5 <= float(lines[5]) <= 0.9
    assert (tmp_path / "run" / "labels" / "000000000003.txt").read_text() == ""  # background image, no boxes


def test_save_json_without_annotations_warns_and_keeps_our_map(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="yolo"):
        res = _run(tmp_path, save_json=True, plots=False)[0]
    assert "no COCO annotation json" in caplog.text
    assert res[3] == pytest.approx(1.0)
    assert (tmp_path / "run" / "_predictions.json").is_file()


def test_bad_input(tmp_path, caplog):
    with pytest.raises(UserError, match="no images"):
        val.run(
            data={"names": NAMES, "nc": 2},
            model=ScriptedModel([]),
            dataloader=FakeLoader(),
            save_dir=tmp_path,
            plots=False,
        )
    with pytest.raises(UserError, match="weights file not found"):
        val.run(data={"names": NAMES, "nc": 2}, weights=tmp_path / "missing.pt", device="cpu")
    with caplog.at_level(logging.WARNING, logger="yolo"):
        val.run(
            data={"names": NAMES, "nc": 2},
            weights=tmp_path / "x.pt",
            conf_thres=0.25,
            device="cpu",
            model=ScriptedModel(_batches()[1]),
            dataloader=_batches()[0],
            save_dir=tmp_path,
            plots=False,
        )
    assert "not comparable" not in caplog.text  # training (in-memory model) does not warn


def test_cli_missing_weights_is_one_line(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "val.py"),
            "--weights",
            str(tmp_path / "nope.pt"),
            "--data",
            str(tmp_path / "d.yaml"),
            "--device",
            "cpu",
            "--project",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "nope.pt" in r.stderr


def test_save_json_prints_the_12_coco_numbers_equal_to_pycocotools(tmp_path, caplog):
    """--save-json logs our evaluator's 12 COCO summary lines; its AP line equals the mAP pycocotools reports."""
    import re

    data = _annotations(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolo"):
        coco = _run(tmp_path, jitter=0.08, data=data, plots=False, save_json=True, pycocotools=True)[0]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().lstrip().startswith("Average ")]
    assert len(lines) == 12
    assert sum("Average Precision" in x for x in lines) == 6 and sum("Average Recall" in x for x in lines) == 6
    ap = float(re.search(r"= ([-\d.]+)$", lines[0]).group(1))  # AP @[ IoU=0.50:0.95 | area=all | maxDets=100 ]
    assert ap == pytest.approx(coco[3], abs=1e-3)  # printed with 3 decimals; coco[3] is the reported mAP50-95
    theirs = float(re.search(r"mAP50-95 ours [\d.]+\s+pycocotools ([\d.]+)", caplog.text).group(1))
    assert ap == pytest.approx(theirs, abs=1e-3)  # pycocotools' mAP50-95, logged by --pycocotools


def _no_pycocotools(monkeypatch):
    """pycocotools can be neither imported nor called: any use of it fails the test."""
    for mod in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import pycocotools...` raises ImportError

    def fail(*args, **kwargs):
        raise AssertionError("pycocotools was run without --pycocotools")

    monkeypatch.setattr(val, "coco_evaluate", fail)


def test_save_json_scores_once_with_our_evaluator(tmp_path, caplog, monkeypatch):
    """--save-json alone: the json is scored by coco_summary only, whose mAP50-95 / mAP50 are the reported ones."""
    from utils.evaluation.coco import coco_summary, load_annotations

    _no_pycocotools(monkeypatch)
    data = _annotations(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolo"):
        res = _run(tmp_path, jitter=0.08, data=data, plots=False, save_json=True)[0]
    rows = json.loads((tmp_path / "run" / "_predictions.json").read_text())
    ours = coco_summary(load_annotations(tmp_path / "anno.json"), rows, [0, 1, 2, 3])
    assert 0.2 < ours.AP < 0.95  # jittered boxes: a non-trivial number
    assert (res[3], res[2]) == (ours.AP, ours.AP50)
    assert "Cross-checking" not in caplog.text and "largest difference" not in caplog.text


def test_pycocotools_flag_runs_it_and_logs_both(tmp_path, caplog, monkeypatch):
    """--pycocotools (without --save-json: it implies it) runs coco_evaluate once on the written json and logs both
    numbers and their largest difference; the reported numbers stay ours."""
    import re

    from utils.evaluation.coco import coco_evaluate

    calls = []

    def spy(anno_json, pred_json, image_ids=None):
        calls.append((Path(anno_json).name, Path(pred_json).name, sorted(image_ids)))
        return coco_evaluate(anno_json, pred_json, image_ids)

    monkeypatch.setattr(val, "coco_evaluate", spy)
    data = _annotations(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolo"):
        res = _run(tmp_path, jitter=0.08, data=data, plots=False, pycocotools=True)[0]
    assert calls == [("anno.json", "_predictions.json", [0, 1, 2, 3])]
    m = re.search(
        r"mAP50-95 ours ([\d.]+)\s+pycocotools ([\d.]+).*largest difference of the 12 COCO numbers (\S+)", caplog.text
    )
    assert m, caplog.text
    assert float(m.group(1)) == pytest.approx(res[3], abs=1e-4)  # ours is what run() returns
    assert float(m.group(2)) == pytest.approx(res[3], abs=0.005) and float(m.group(3)) <= 0.005
