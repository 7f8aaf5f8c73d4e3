"""Metrics on hand-built cases with known answers, and agreement with pycocotools on noisy synthetic predictions."""

import json

import numpy as np
import pytest
import torch

from utils.evaluation.coco import (
    class_to_category_map,
    coco80_to_coco91_class,
    coco_evaluate,
    detections_to_coco,
    image_id_for,
    labels_to_coco,
)
from utils.evaluation.metrics import ConfusionMatrix, DetectionStats, compute_ap, fitness, match_predictions


def _labels(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)  # cls x1 y1 x2 y2


def _dets(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)  # x1 y1 x2 y2 conf cls


def _evaluate(pairs):
    stats = DetectionStats()
    for dets, labels in pairs:
        stats.update(dets, labels)
    return stats.compute()


def _truth():
    """Three images, two classes, five labels."""
    return [
        _labels([[0, 10, 10, 60, 50], [1, 70, 20, 120, 90]]),
        _labels([[1, 5, 5, 45, 45]]),
        _labels([[0, 20, 30, 100, 80], [0, 110, 10, 150, 60]]),
    ]


def _as_dets(labels, conf=0.9, dx=0.0):
    d = torch.zeros(len(labels), 6)
    d[:, :4] = labels[:, 1:5]
    d[:, [0, 2]] += dx
    d[:, 4] = conf
    d[:, 5] = labels[:, 0]
    return d


def test_perfect_predictions_give_map_1():
    res = _evaluate([(_as_dets(lb), lb) for lb in _truth()])
    assert res["map50"] == pytest.approx(1.0) and res["map"] == pytest.approx(1.0)
    assert res["mp"] == pytest.approx(1.0) and res["mr"] == pytest.approx(1.0)


def test_iou_062_gives_map50_1_and_map_03():
    pairs = []
    for lb in _truth():
        d = []
        for row in lb:
            w = float(row[3] - row[1])
            shift = w * (1 - 0.62) / (1 + 0.62)  # horizontal shift s: IoU = (w - s) / (w + s) = 0.62
            d.append(_as_dets(row[None], dx=shift))
        d = torch.cat(d)
        assert torch.allclose(
            torch.diag(__import__("torchvision").ops.box_iou(lb[:, 1:], d[:, :4])), torch.tensor(0.62), atol=1e-4
        )
        pairs.append((d, lb))
    res = _evaluate(pairs)
    assert res["map50"] == pytest.approx(1.0)
    assert res["map"] == pytest.approx(0.3)  # thresholds 0.50, 0.55, 0.60 of ten


def test_duplicate_is_false_positive():
    lb = _labels([[0, 10, 10, 60, 60]])
    dets = _dets([[10, 10, 60, 60, 0.9, 0], [11, 11, 61, 61, 0.8, 0]])
    correct = match_predictions(dets, lb)
    assert correct[0].all() and not correct[1].any()
    # the first-ranked box is a TP, the duplicate a FP after it: precision 1 up to recall 1 -> AP 1 still;
    # ranked first, the duplicate costs precision: AP = 0.5 at every threshold where the true box matches
    res = _evaluate([(_dets([[10, 10, 60, 60, 0.5, 0], [40, 40, 90, 90, 0.9, 0]]), lb)])
    assert res["map50"] == pytest.approx(0.5)


def test_matching_follows_coco_rule():
    lb = _labels([[0, 10, 10, 60, 60], [0, 20, 10, 70, 60]])  # two overlapping labels
    # the confident box overlaps both (IoU 0.72 and 0.92) and takes the better one; the exact box gets the other
    dets = _dets([[18, 10, 68, 60, 0.9, 0], [10, 10, 60, 60, 0.3, 0]])
    correct = match_predictions(dets, lb)
    assert correct[0, :9].all() and not correct[0, 9]  # IoU 0.92: passes 0.50..0.90
    assert correct[1].all()
    # a confident box with lower IoU keeps its label ahead of a better-placed but less confident duplicate
    dets = _dets([[14, 10, 64, 60, 0.9, 0], [10, 10, 60, 60, 0.3, 0]])
    correct = match_predictions(dets, lb[:1])
    assert correct[0, 0] and not correct[1, 0]  # at IoU 0.5 the confident one matches, the other is a duplicate
    assert correct[1, -1] and not correct[0, -1]  # at 0.95 only the exact box qualifies, so it is the match


def test_wrong_class_is_a_miss():
    lb = _labels([[0, 10, 10, 60, 60], [1, 100, 100, 140, 150]])
    dets = _dets([[10, 10, 60, 60, 0.8, 1], [100, 100, 140, 150, 0.9, 1]])  # first box has the wrong class
    assert not match_predictions(dets, lb)[0].any()
    res = _evaluate([(dets, lb)])
    assert res["ap50"].tolist() == pytest.approx([0.0, 1.0])  # class 0 missed, class 1 found
    assert res["map50"] == pytest.approx(0.5)
    assert res["r"].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_unmatched_labels_lower_recall_and_ap():
    lbs = _truth()
    pairs = [(_as_dets(lbs[0]), lbs[0]), (_dets([]), lbs[1]), (_as_dets(lbs[2]), lbs[2])]
    res = _evaluate(pairs)
    assert res["ap50"].tolist() == pytest.approx([1.0, 0.5], abs=0.01)  # class 1: one of two found
    assert res["nt"].tolist() == [3, 2]


def test_compute_ap_101_point():
    # recall reaches 0.5 at precision 1 then 1.0 at precision 0.5: points 0..0.5 -> 1, 0.51..1 -> 0.5
    ap, _, _ = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    assert ap == pytest.approx((51 * 1.0 + 50 * 0.5) / 101)
    assert compute_ap(np.array([]), np.array([]))[0] == 0.0


def test_fitness_weights():
    assert fitness(np.array([0.9, 0.9, 0.5, 0.3])) == pytest.approx(0.1 * 0.5 + 0.9 * 0.3)
    out = fitness(np.array([[0, 0, 1.0, 0.0], [0, 0, 0.0, 1.0]]))
    assert out.tolist() == pytest.approx([0.1, 0.9])


def test_confusion_matrix_counts(tmp_path):
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    lb = _labels([[0, 10, 10, 60, 60], [1, 100, 100, 140, 150], [1, 0, 100, 30, 140]])
    dets = _dets(
        [
            [10, 10, 60, 60, 0.9, 0],  # correct class 0
            [100, 100, 140, 150, 0.8, 0],  # class 1 predicted as 0
            [200, 200, 230, 230, 0.7, 1],  # false alarm
            [0, 100, 30, 140, 0.1, 1],
        ]
    )  # below conf: ignored -> that label is missed
    cm.process_batch(dets, lb)
    expected = np.array([[1, 1, 0], [0, 0, 1], [0, 1, 0]])  # rows predicted (0, 1, bg), columns true
    assert np.array_equal(cm.matrix, expected)
    cm.process_batch(None, lb)
    assert cm.matrix[2].tolist() == [1, 3, 0]
    assert cm.plot(save_dir=tmp_path, names={0: "a", 1: "b"}).stat().st_size > 1000


def test_coco_ids_and_json_rows():
    ids = coco80_to_coco91_class()
    assert len(ids) == 80 and ids[11] == 13 and ids[-1] == 90
    assert class_to_category_map([{"id": i} for i in ids], 80) == ids
    assert class_to_category_map([{"id": i} for i in range(1, 4)], 3) == [1, 2, 3]
    assert class_to_category_map([{"id": i} for i in range(3)], 3) == [0, 1, 2]
    assert image_id_for("a/000000397133.jpg") == 397133
    assert image_id_for("x/cat.jpg", {"cat.jpg": 7}) == 7
    assert image_id_for("x/cat.jpg") == image_id_for("y/cat.jpg")  # stable without a json
    rows = detections_to_coco(_dets([[10, 20, 40, 60, 0.87654321, 1]]), 5, [1, 2])
    assert rows == [{"image_id": 5, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.87654}]


def _synthetic_set(n_images=40, nc=3, seed=0, size=160):
    """Random ground truth and noisy predictions: jittered true boxes, duplicates, wrong classes, random clutter."""
    rng = np.random.default_rng(seed)
    images, preds = [], []
    for k in range(n_images):
        m = rng.integers(1, 6)
        wh = rng.uniform(0.1, 0.4, (m, 2))
        c = rng.uniform(0.25, 0.75, (m, 2))
        cls = rng.integers(0, nc, (m, 1))
        labels = np.concatenate((cls, c, wh), 1)
        images.append((f"img_{k}.jpg", size, size, labels))
        xyxy = np.concatenate((c - wh / 2, c + wh / 2), 1) * size
        rows = []
        for box, cl in zip(xyxy, cls[:, 0]):
            for _ in range(rng.integers(0, 3)):  # 0..2 detections per object (misses and duplicates)
                b = box + rng.normal(0, 0.08, 4) * np.tile(box[2:] - box[:2], 2)
                b[2:] = np.maximum(b[2:], b[:2] + 1)  # a real model never outputs negative sizes
                wrong = rng.random() < 0.1
                rows.append([*b, rng.random(), (cl + 1) % nc if wrong else cl])
        for _ in range(rng.integers(0, 4)):  # clutter
            x, y = rng.uniform(0, size - 30, 2)
            rows.append([x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 30), rng.random() * 0.5, rng.integers(nc)])
        preds.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 6))
    return images, preds


def test_map_agrees_with_pycocotools(tmp_path):
    names = {0: "a", 1: "b", 2: "c"}
    images, preds = _synthetic_set()
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(labels_to_coco(images, names)))
    stats, results = DetectionStats(), []
    for (file, w, h, lb), p in zip(images, preds):
        xyxy = np.concatenate((lb[:, 1:3] - lb[:, 3:5] / 2, lb[:, 1:3] + lb[:, 3:5] / 2), 1) * [w, h, w, h]
        stats.update(p, torch.tensor(np.concatenate((lb[:, :1], xyxy), 1), dtype=torch.float32))
        results += detections_to_coco(p, image_id_for(file), [0, 1, 2])
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps(results))
    ours = stats.compute()
    coco = coco_evaluate(anno, pred_json)  # pycocotools' 12 numbers
    coco_map, coco_map50 = coco.AP, coco.AP50
    assert 0.2 < coco_map < 0.9  # a non-trivial case
    assert abs(ours["map"] - coco_map) <= 0.005
    assert abs(ours["map50"] - coco_map50) <= 0.005
