"""Benchmark: COCO bbox evaluation at COCO scale — utils.evaluation.coco.coco_summary vs pycocotools and
faster-coco-eval.

    python benchmarks/coco_eval.py                      # 5,000 images, ~36k gt boxes, ~300k detections, 3 rounds
    python benchmarks/coco_eval.py --images 500 --rounds 5

A synthetic COCO-like set (80 categories with a skewed frequency, COCO's small / medium / large mix, ~1% crowd,
segment-like 'area' below the box area, a few empty images) and detections: jittered copies of the gts (some with the
wrong class) plus clutter, >100 per (image, category) in crowded images. Each round runs every evaluator once, in a
rotating order, on freshly parsed copies of the same dicts (pycocotools writes into them), timing the whole call from
dicts to the 12 numbers. Prints the median time of each, the median of the per-round ratios (both evaluators timed in
the same round), and the largest difference of the 12 numbers to pycocotools. Targets: ours >= 15x faster than
pycocotools and faster than faster-coco-eval, all 12 numbers within 1e-4 of pycocotools.
faster-coco-eval is optional (pip install faster-coco-eval; not a dependency of the project): skipped when absent.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from utils.core.errors import cli_main
from utils.evaluation.coco import coco80_to_coco91_class, coco_summary, pycocotools_stats

IMG_W, IMG_H = 640, 480


def _box_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2) w, h: sqrt(area) log-normal fitted to COCO's mix (41% < 32 px, 24% > 96 px), aspect log-normal."""
    side = np.exp(rng.normal(3.734, 1.176, n)).clip(2, 600)
    aspect = np.exp(rng.normal(0, 0.5, n))
    return np.stack((side * np.sqrt(aspect), side / np.sqrt(aspect)), 1)


def _place(rng: np.random.Generator, wh: np.ndarray) -> np.ndarray:
    """(n, 4) xywh boxes of the given sizes at random positions, clipped to the image."""
    wh = np.minimum(wh, [IMG_W - 1, IMG_H - 1])
    xy = rng.uniform(0, 1, wh.shape) * ([IMG_W, IMG_H] - wh)
    return np.concatenate((xy, wh), 1)


def synthetic_ground_truth(rng: np.random.Generator, n_images: int, per_image: float) -> dict:
    """COCO annotation dict: objects per image negative-binomial (mean per_image, ~1% empty images)."""
    cat_ids = np.array(coco80_to_coco91_class())
    freq = 1 / np.arange(1, 81) ** 1.1  # Zipf-like: 'person' (first) ~ a quarter of all boxes
    counts = rng.negative_binomial(1.5, 1.5 / (1.5 + per_image), n_images)
    n = int(counts.sum())
    boxes = _place(rng, _box_sizes(rng, n))
    cats = cat_ids[rng.choice(80, n, p=freq / freq.sum())]
    crowd = rng.random(n) < 0.01
    area = boxes[:, 2] * boxes[:, 3] * rng.uniform(0.5, 1.0, n)  # a segment covers part of its box
    img = np.repeat(np.arange(1, n_images + 1), counts)
    anns = [
        {
            "id": i + 1,
            "image_id": int(im),
            "category_id": int(c),
            "bbox": [round(v, 2) for v in b],
            "area": round(float(a), 2),
            "iscrowd": int(cr),
        }
        for i, (im, c, b, a, cr) in enumerate(zip(img, cats, boxes.tolist(), area, crowd))
    ]
    return {
        "images": [
            {"id": i, "width": IMG_W, "height": IMG_H, "file_name": f"{i:012d}.jpg"} for i in range(1, n_images + 1)
        ],
        "annotations": anns,
        "categories": [{"id": int(c), "name": f"class{c}"} for c in cat_ids],
    }


def synthetic_detections(rng: np.random.Generator, anno: dict, per_image: float) -> list[dict]:
    """Result dicts: 0-4 jittered copies of each gt (10% with a wrong class, higher scores), then clutter up to
    ~per_image detections per image (low scores, mostly the image's own categories). Rounded like
    utils.evaluation.coco.detections_to_coco."""
    anns = anno["annotations"]
    gt = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
    copies = rng.integers(0, 5, len(anns))
    src = np.repeat(np.arange(len(anns)), copies)
    box = gt[src] + rng.normal(0, 0.1, (len(src), 4)) * np.tile(gt[src, 2:], 2)
    box[:, 2:] = np.abs(box[:, 2:]) + 0.5
    cats = np.array([a["category_id"] for a in anns])
    all_cats = np.array([c["id"] for c in anno["categories"]])
    cls = np.where(rng.random(len(src)) < 0.1, rng.choice(all_cats, len(src)), cats[src])
    img = np.array([a["image_id"] for a in anns])[src]
    score = rng.beta(4, 2, len(src))
    n_img = len(anno["images"])
    n_clutter = max(int(per_image * n_img) - len(src), 0)
    c_img = rng.integers(1, n_img + 1, n_clutter)
    c_box = _place(rng, _box_sizes(rng, n_clutter))
    c_cls = rng.choice(all_cats, n_clutter)
    c_score = rng.beta(1.5, 4, n_clutter)
    rows = zip(
        np.r_[img, c_img].tolist(),
        np.r_[cls, c_cls].tolist(),
        np.r_[box, c_box].round(3).tolist(),
        np.r_[score, c_score].round(5).tolist(),
    )
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in rows]


def ours(anno: dict, dets: list[dict]) -> list[float]:
    return coco_summary(anno, dets).as_list()


def faster_coco_eval_stats(anno: dict, dets: list[dict]) -> list[float]:
    """faster-coco-eval's COCOeval_faster (C++ evaluate / accumulate) from the same dicts."""
    from faster_coco_eval import COCO, COCOeval_faster  # optional: not a dependency of the project

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(anno)
        ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def evaluators() -> dict[str, Callable[[dict, list[dict]], list[float]]]:
    """The evaluators to compare; faster-coco-eval only where it is installed."""
    out = {"ours": ours, "pycocotools": pycocotools_stats}
    try:
        import faster_coco_eval  # noqa: F401  optional: only compared against when installed

        out["faster-coco-eval"] = faster_coco_eval_stats
    except ImportError:
        print("note: faster-coco-eval is not installed (pip install faster-coco-eval) — skipped")
    return out


def time_rounds(anno_json: str, dets_json: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Per evaluator: seconds of each round, and its 12 numbers. The order rotates every round so that no
    evaluator always runs first (cold caches) or right after the slowest one; inputs are parsed outside the timer."""
    fns = evaluators()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    stats: dict[str, list] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            anno, dets = json.loads(anno_json), json.loads(dets_json)
            gc.collect()  # no evaluator pays for the garbage of the one before
            t0 = time.perf_counter()
            stats[name] = fns[name](anno, dets)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}/{rounds}  {name:<17} {times[name][-1]:8.3f}s", flush=True)
    return times, stats


def report(times: dict[str, list[float]], stats: dict[str, list]) -> dict:
    """Table of median times, per-round ratios to ours (median) and the largest |diff| of the 12 numbers."""
    ref = np.array(stats["pycocotools"])
    out = {"diff_vs_pycocotools": {n: float(np.abs(np.array(s) - ref).max()) for n, s in stats.items()}}
    print("\n| evaluator | median s | rounds (s) | time / ours (median of rounds) | max |diff| of 12 vs pycocotools |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        ratio = statistics.median(t / o for t, o in zip(ts, times["ours"]))
        out[name] = {"median_s": statistics.median(ts), "ratio": ratio}
        print(
            f"| {name} | {statistics.median(ts):.3f} | {' '.join(f'{t:.2f}' for t in ts)} | {ratio:.1f}x | "
            f"{out['diff_vs_pycocotools'][name]:.1e} |"
        )
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    print("\n" + "  ".join(f"{k} {v:.4f}" for k, v in zip(keys, stats["ours"])))
    return out


def run(
    images: int = 5000, gt_per_image: float = 7.2, dets_per_image: float = 60.0, rounds: int = 3, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)
    anno = synthetic_ground_truth(rng, images, gt_per_image)
    dets = synthetic_detections(rng, anno, dets_per_image)
    n_crowd = sum(a["iscrowd"] for a in anno["annotations"])
    print(f"{images} images, {len(anno['annotations'])} gt boxes ({n_crowd} crowd), {len(dets)} detections")
    times, stats = time_rounds(json.dumps(anno), json.dumps(dets), rounds)
    out = report(times, stats)
    ok = out["diff_vs_pycocotools"]["ours"] <= 1e-4
    print(
        f"\n12 numbers within 1e-4 of pycocotools: {ok};  ours vs pycocotools {out['pycocotools']['ratio']:.1f}x "
        f"(target >= 15x)"
        + (
            f";  vs faster-coco-eval {out['faster-coco-eval']['ratio']:.2f}x (target > 1x)"
            if "faster-coco-eval" in out
            else ""
        )
    )
    return out


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--gt-per-image", type=float, default=7.2, help="mean gt boxes per image")
    p.add_argument("--dets-per-image", type=float, default=60.0, help="mean detections per image")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every evaluator once (median reported)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
