"""End to end: weights trained by train.py find the objects of a freshly generated shapes image (Python API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from tests.fixtures_train import FIXTURE_IMGSZ
from utils.core.boxes import xywhn2xyxy


def test_trained_weights_detect_new_image(trained_weights, tmp_path):
    from data.scripts.make_shapes import generate_shapes
    from utils.inference.api import load_model

    generate_shapes(tmp_path, n_train=0, n_val=4, imgsz=FIXTURE_IMGSZ, seed=12345)  # images the model has never seen
    images = sorted(p for p in tmp_path.rglob("*") if p.suffix.lower() in (".jpg", ".png") and "images" in p.parts)
    assert images
    model = load_model(trained_weights, device="cpu", imgsz=FIXTURE_IMGSZ)
    found = total = 0
    for im in images:
        lab = Path(str(im).replace("/images/", "/labels/")).with_suffix(".txt")
        rows = np.loadtxt(lab, ndmin=2) if lab.is_file() and lab.stat().st_size else np.zeros((0, 5))
        h, w = __import__("cv2").imread(str(im)).shape[:2]
        gt = torch.as_tensor(xywhn2xyxy(rows[:, 1:], w, h), dtype=torch.float32)
        res = model(str(im))[0]
        total += len(gt)
        if len(gt) and len(res):
            iou = box_iou(gt, res.xyxy.float().cpu())
            same = rows[:, :1] == res.cls.cpu().numpy()[None, :]
            found += int(((iou.numpy() >= 0.5) & same).any(1).sum())
    assert total > 0
    assert found / total >= 0.8, (found, total)
