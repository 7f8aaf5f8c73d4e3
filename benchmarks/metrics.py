"""Benchmark: our mAP (utils.evaluation.metrics) vs pycocotools COCOeval on the same predictions — agreement and speed.

    python benchmarks/metrics.py                 # synthetic labels, 500 images
    python benchmarks/metrics.py --data data.yaml  # the labels of a dataset's val split instead

Predictions are noisy copies of the labels (jitter, misses, duplicates, wrong classes, clutter), so the mAP is well
inside (0, 1). Prints both mAP50-95 values, their difference and the speed ratio (pycocotools time / ours) measured
in this run. Targets: difference <= 0.005, ours >= 5x faster.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from utils.core.boxes import xywhn2xyxy
from utils.core.errors import cli_main
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import LoadImagesAndLabels
from utils.evaluation.coco import detections_to_coco, image_id_for, labels_to_coco, pycocotools_stats
from utils.evaluation.metrics import DetectionStats


def synthetic_labels(n_images: int, nc: int, rng: np.random.Generator, size: int = 320) -> list[tuple]:
    """(file, w, h, labels (n, 5) cls cx cy w h normalised) for random images with 1-12 objects."""
    out = []
    for k in range(n_images):
        m = int(rng.integers(1, 13))
        wh = rng.uniform(0.03, 0.4, (m, 2))
        c = rng.uniform(0.2, 0.8, (m, 2))
        out.append((f"{k:06d}.jpg", size, size, np.concatenate((rng.integers(0, nc, (m, 1)), c, wh), 1)))
    return out


def dataset_labels(data: str) -> tuple[list[tuple], int]:
    """The val split's labels of a dataset yaml (read through the data pipeline: check_dataset, LoadImagesAndLabels)."""
    d = check_dataset(data)
    ds = LoadImagesAndLabels(d["val"], img_size=640, augment=False)
    return [(f, int(s[0]), int(s[1]), lb) for f, s, lb in zip(ds.im_files, ds.shapes, ds.labels)], len(d["names"])


def noisy_predictions(images: list[tuple], nc: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Per image (n, 6) xyxy conf cls: 0-3 jittered copies per object (10% wrong class) plus 0-5 clutter boxes."""
    preds = []
    for _, w, h, lb in images:
        boxes = xywhn2xyxy(np.asarray(lb[:, 1:5], dtype=np.float64), w, h)
        rows = []
        for box, cls in zip(boxes, lb[:, 0]):
            size = np.tile(box[2:] - box[:2], 2)
            for _ in range(int(rng.integers(0, 4))):
                b = box + rng.normal(0, 0.07, 4) * size
                b[2:] = np.maximum(b[2:], b[:2] + 1)
                rows.append([*b, rng.random(), (cls + 1) % nc if rng.random() < 0.1 else cls])
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, w - 40), rng.uniform(0, h - 40)
            rows.append([x, y, x + rng.uniform(4, 40), y + rng.uniform(4, 40), rng.random() * 0.6, rng.integers(nc)])
        preds.append(torch.tensor(rows, dtype=torch.float32).reshape(-1, 6))
    return preds


def pixel_labels(images: list[tuple]) -> list[torch.Tensor]:
    """Labels as (n, 5) [cls x1 y1 x2 y2] pixel tensors, the form val.py feeds to the metrics."""
    out = []
    for _, w, h, lb in images:
        lb = torch.as_tensor(np.asarray(lb), dtype=torch.float32).reshape(-1, 5)
        out.append(torch.cat((lb[:, :1], xywhn2xyxy(lb[:, 1:5], w, h)), 1))
    return out


def ours(labels: list[torch.Tensor], preds: list[torch.Tensor]) -> float:
    """mAP50-95 with utils.evaluation.metrics from per-image predictions and pixel labels."""
    stats = DetectionStats()
    for lb, p in zip(labels, preds):
        stats.update(p, lb)
    return stats.compute()["map"]


def pycocotools_map(anno: dict, results: list[dict]) -> float:
    """mAP50-95 with pycocotools COCOeval from in-memory annotation and result dicts."""
    return pycocotools_stats(anno, results)[0]


def run(data: str = "", images: int = 500, nc: int = 5, seed: int = 0) -> dict[str, float]:
    """Run the comparison once and return {ours, pycocotools, diff, t_ours, t_coco, speedup, boxes}."""
    rng = np.random.default_rng(seed)
    if data:
        imgs, nc = dataset_labels(data)
    else:
        imgs = synthetic_labels(images, nc, rng)
    names = {i: f"class{i}" for i in range(nc)}
    preds = noisy_predictions(imgs, nc, rng)
    anno = labels_to_coco(imgs, names)
    results = [r for (f, *_), p in zip(imgs, preds) for r in detections_to_coco(p, image_id_for(f), list(range(nc)))]
    labels = pixel_labels(imgs)  # both sides get their inputs ready-made: tensors for us, dicts for pycocotools
    t0 = time.perf_counter()
    m_ours = ours(labels, preds)
    t1 = time.perf_counter()
    m_coco = pycocotools_map(anno, results)
    t2 = time.perf_counter()
    out = {
        "images": len(imgs),
        "boxes": sum(len(p) for p in preds),
        "labels": len(anno["annotations"]),
        "ours": m_ours,
        "pycocotools": m_coco,
        "diff": abs(m_ours - m_coco),
        "t_ours": t1 - t0,
        "t_coco": t2 - t1,
        "speedup": (t2 - t1) / max(t1 - t0, 1e-9),
    }
    print(f"{out['images']} images, {out['labels']} labels, {out['boxes']} predicted boxes")
    print(f"mAP50-95  ours {m_ours:.5f}   pycocotools {m_coco:.5f}   |diff| {out['diff']:.5f}  (target <= 0.005)")
    print(
        f"time      ours {out['t_ours']:.3f}s   pycocotools {out['t_coco']:.3f}s   "
        f"speed ratio {out['speedup']:.1f}x  (target >= 5x)"
    )
    return out


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="", help="dataset yaml: use its val labels instead of synthetic ones")
    p.add_argument("--images", type=int, default=500, help="synthetic images")
    p.add_argument("--nc", type=int, default=5, help="synthetic classes")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
