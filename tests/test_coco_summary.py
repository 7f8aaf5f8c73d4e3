"""utils.evaluation.coco.coco_summary: COCOeval's 12 numbers, held to pycocotools (within 1e-4) on small synthetic
sets that hit its special rules (crowd, empty images, area-range edges, >100 detections per image, score ties), plus
hand-checked cases with known answers."""

import contextlib
import copy
import io

import numpy as np
import pytest

from utils.evaluation.coco import CocoSummary, coco_accumulate, coco_summary


def _pycocotools(anno: dict, dets: list[dict], image_ids=None):
    """pycocotools' COCOeval on copies (it writes into its inputs); returns the evaluator with stats and eval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()) as out:
        gt = COCO()
        gt.dataset = copy.deepcopy(anno)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ev.printed = out.getvalue()
    return ev


def _noisy_set(seed: int, n_img: int = 24, nc: int = 4, dets_per_gt: int = 4) -> tuple[dict, list[dict]]:
    """Random gts (log-uniform sizes 3..300 px, 'area' below the box area, 10% crowd; some images empty) and
    detections: jittered copies (some wrong class) plus clutter, scores rounded to 2 decimals so ties occur.
    Category 7 exists but is never detected; image 5 has detections only."""
    rng = np.random.default_rng(seed)
    cats = [1, 3, 4, 7][:nc]
    anno = {
        "images": [{"id": 10 + i} for i in range(n_img)],
        "categories": [{"id": c} for c in cats],
        "annotations": [],
    }
    dets = []
    for im in anno["images"]:
        n = 0 if im["id"] in (10, 15, 16) else int(rng.integers(1, 10))
        for _ in range(n):
            w, h = np.exp(rng.uniform(np.log(3), np.log(300), 2))
            x, y = rng.uniform(0, 300, 2)
            c = int(rng.choice(cats))
            anno["annotations"].append(
                {
                    "id": len(anno["annotations"]) + 1,
                    "image_id": im["id"],
                    "category_id": c,
                    "bbox": [x, y, w, h],
                    "area": w * h * rng.uniform(0.6, 1.0),
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
            for _ in range(int(rng.integers(0, dets_per_gt))):
                b = np.array([x, y, w, h]) + rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() > 0.1 else int(rng.choice(cats))
                dets.append(_det(im["id"], 1 if cls == 7 else cls, [*b[:2], *(np.abs(b[2:]) + 1)], rng))
        for _ in range(int(rng.integers(0, 8))):
            dets.append(
                _det(im["id"], int(rng.choice(cats[:3])), [*rng.uniform(0, 300, 2), *rng.uniform(2, 120, 2)], rng)
            )
    return anno, dets


def _det(image_id: int, cat: int, box, rng) -> dict:
    return {
        "image_id": image_id,
        "category_id": cat,
        "bbox": [float(v) for v in box],
        "score": round(float(rng.random()), 2),
    }


def _assert_like_pycocotools(anno: dict, dets: list[dict], image_ids=None) -> CocoSummary:
    ev = _pycocotools(anno, dets, image_ids)
    ours = coco_summary(anno, dets, image_ids)
    assert np.abs(np.array(ours.as_list()) - ev.stats).max() <= 1e-4, (ours, ev.stats)
    precision, recall = coco_accumulate(anno, dets, image_ids)
    assert np.abs(precision - ev.eval["precision"]).max() <= 1e-4  # per category, threshold, area, maxDets too
    assert np.abs(recall - ev.eval["recall"]).max() <= 1e-4
    return ours


@pytest.mark.parametrize("seed", range(4))
def test_noisy_sets_equal_pycocotools(seed):
    ours = _assert_like_pycocotools(*_noisy_set(seed))
    assert 0.05 < ours.AP < 0.9 and ours.APs != ours.APl  # a non-trivial case


def test_image_subset_equals_pycocotools():
    anno, dets = _noisy_set(7)
    _assert_like_pycocotools(anno, dets, image_ids=[im["id"] for im in anno["images"]][::3])


def test_more_than_100_detections_per_image():
    """maxDets counts per (image, category): 150 detections of one category, the true one ranked 120th."""
    rng = np.random.default_rng(0)
    anno = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1}, {"id": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [200 + i, 200, 20, 20], "score": 0.9 - i * 0.001} for i in range(150)
    ]
    dets[119]["bbox"] = [10, 10, 50, 50]  # rank 120: cut by maxDets=100
    dets += [
        {"image_id": 2, "category_id": 2, "bbox": [10, 11, 50, 50], "score": 0.1 + i * 0.001} for i in range(120)
    ]  # all hit the gt; only one can match, the best-scored
    dets += [_det(2, 1, [*rng.uniform(0, 200, 2), 30, 30], rng) for _ in range(130)]
    ours = _assert_like_pycocotools(anno, dets)
    assert ours.AR100 == pytest.approx(0.5)  # category 1 missed, category 2 found


def test_area_edges_and_crowd():
    """gt areas exactly 32^2 and 96^2 belong to two ranges; a detection inside a crowd region is ignored, not
    a false positive; the 'area' field decides the range, not the box."""
    anns = [
        (1, [0, 0, 32, 32], 32**2, 0),
        (2, [100, 0, 96, 96], 96**2, 0),
        (3, [0, 200, 40, 40], 30**2, 0),
        (4, [300, 300, 200, 200], 40000, 1),
        (5, [0, 100, 10, 10], 100, 0),
    ]
    anno = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": 1, "bbox": b, "area": a, "iscrowd": c} for i, b, a, c in anns
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": b, "score": s}
        for b, s in [
            ([0, 0, 32, 32], 0.9),
            ([100, 0, 96, 96], 0.8),
            ([0, 201, 40, 40], 0.7),
            ([350, 350, 50, 50], 0.95),
            ([320, 310, 60, 60], 0.6),
            ([400, 0, 31.9, 32], 0.5),
        ]
    ]
    ours = _assert_like_pycocotools(anno, dets)
    assert ours.ARs == pytest.approx(2 / 3)  # small gts: areas 1024, 900, 100; the 10x10 one is missed
    assert ours.ARm == ours.ARl == 1.0  # 1024 and 9216 are medium too, 9216 is large too: both found
    assert ours.APm == pytest.approx(1.0)  # the small false positive (area 1020.8) is ignored for 'medium'
    assert ours.AR1 == 0.0  # the best-scored detection lies in the crowd region: ignored, so nothing found


def test_prefers_a_non_ignored_gt():
    """COCOeval matches a detection to a non-ignored gt above the threshold before any ignored one (crowd, or outside
    the area range), even one with a higher IoU; among equals the higher IoU, ties to the later gt."""
    anno = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 1e4, "iscrowd": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 0, 100, 100], "area": 1e4, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [300, 0, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [305, 0, 30, 30], "area": 900, "iscrowd": 0},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.9},  # IoU 1 crowd, .82 gt 2
        {"image_id": 1, "category_id": 1, "bbox": [302.5, 0, 30, 30], "score": 0.8},  # equal IoU to gts 3, 4
        {"image_id": 1, "category_id": 1, "bbox": [293, 0, 30, 30], "score": 0.7},
    ]  # IoU >= .5 with gt 3 only
    ours = _assert_like_pycocotools(anno, dets)
    assert ours.AR1 > 0  # the top detection found gt 2 instead of being swallowed by the crowd region
    # recall over 3 gts and 10 thresholds: gt 2 at IoU .82 (7 thresholds), gt 4 at .85 (7), and gt 3 at .62 (3),
    # found only because the tie went to gt 4 (14 / 30 otherwise)
    assert ours.AR10 == pytest.approx(17 / 30)


def test_picks_the_highest_iou():
    """A detection takes the free gt with the highest IoU (A at .97, not B at .62), so the next one, which only
    reaches A (.645), finds nothing: recall 1 of 2 at every threshold."""
    anno = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, b in enumerate([[0, 0, 100, 100], [0, 0, 100, 60]])
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": b, "score": s}
        for b, s in [([0, 0, 100, 97], 0.9), ([0, 0, 100, 155], 0.8)]
    ]
    assert _assert_like_pycocotools(anno, dets).AR100 == pytest.approx(0.5)


def test_gt_id_zero_counts_like_pycocotools():
    """COCOeval marks 'no match' with gt id 0, so a detection matched to a gt with id 0 becomes a false positive."""
    anno = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": 1, "bbox": [60 * i, 0, 50, 50], "area": 2500, "iscrowd": 0}
            for i in range(2)
        ],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": [60 * i, 0, 50, 50], "score": 0.9 - i / 10} for i in range(2)]
    ours = _assert_like_pycocotools(anno, dets)
    assert ours.AR100 == pytest.approx(0.5)


def test_known_answers():
    """One gt, one detection at IoU 0.62: matched at thresholds .50 .55 .60 of ten, so AP = AR = 0.3."""
    w, s = 100.0, 100 * (1 - 0.62) / (1 + 0.62)  # horizontal shift s: IoU = (w - s) / (w + s) = 0.62
    anno = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1}, {"id": 2}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, w, w], "area": w * w, "iscrowd": 0}],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": [s, 0, w, w], "score": 0.5}]
    ours = _assert_like_pycocotools(anno, dets)
    assert (ours.AP, ours.AP50, ours.AP75, ours.AR1, ours.APl) == pytest.approx((0.3, 1.0, 0.0, 0.3, 0.3))
    assert ours.APs == ours.APm == ours.ARs == -1  # no gt in those ranges: COCOeval's -1
    perfect = coco_summary(anno, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, w, w], "score": 0.5}])
    assert perfect.AP == pytest.approx(1.0) and perfect.AR100 == 1.0  # COCOeval's tp / (tp + fp + eps)


def test_no_detections_and_no_images():
    anno, _ = _noisy_set(1)
    assert coco_summary(anno, []).as_list() == [0.0] * 12  # pycocotools cannot even load an empty result list
    assert coco_summary({"images": [], "categories": [], "annotations": []}, []).as_list() == [-1.0] * 12


def test_lines_print_like_pycocotools():
    anno, dets = _noisy_set(2)
    ev = _pycocotools(anno, dets)
    printed = [ln for ln in ev.printed.splitlines() if ln.startswith(" Average")]
    assert coco_summary(anno, dets).lines() == printed


def test_stable_order_equals_lexsort_on_both_paths():
    from utils.evaluation.coco import _stable_order

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 1000), rng.integers(0, 7, 1000)
    expected = np.lexsort((b, a))  # a most significant, ties in index order
    assert np.array_equal(_stable_order((a, 5), (b, 7)), expected)
    assert np.array_equal(_stable_order((a, 5), (b, 2**61)), expected)  # radix too large: the lexsort fallback
