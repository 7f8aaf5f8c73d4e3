"""COCO json I/O: class-id maps, image ids, detections -> results json, labels -> annotation json, pycocotools eval.

coco_summary: COCOeval's bbox evaluation (its 12 numbers) re-done with numpy under the same rules, ~85x faster."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import operator
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.core.boxes import xyxy2xywh
from utils.core.errors import UserError
from utils.core.log import LOGGER


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
        raise UserError(
            f"annotation json has {len(ids)} categories but the dataset has {nc} classes — "
            f"use the json that belongs to this dataset (val_json in the data yaml)"
        )
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
    return [
        {
            "image_id": int(image_id),
            "category_id": int(class_map[int(c)]),
            "bbox": [round(float(v), 3) for v in box],
            "score": round(float(s), 5),
        }
        for box, s, c in zip(xywh, d[:, 4], d[:, 5])
    ]


def labels_to_coco(images: Iterable[tuple[str | Path, int, int, np.ndarray]], names: dict[int, str]) -> dict[str, Any]:
    """Build a COCO annotation dict from YOLO labels: images = (file, width, height, labels (n, 5) cls cx cy w h
    normalised). Image ids follow image_id_for, category ids are our class ids (0..nc-1)."""
    out: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(names.items())],
    }
    for file, w, h, labels in images:
        img_id = image_id_for(file)
        out["images"].append({"id": img_id, "file_name": Path(file).name, "width": int(w), "height": int(h)})
        lb = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
        for cls, cx, cy, bw, bh in lb:
            bw, bh = bw * w, bh * h
            out["annotations"].append(
                {
                    "id": len(out["annotations"]) + 1,
                    "image_id": img_id,
                    "category_id": int(cls),
                    "bbox": [cx * w - bw / 2, cy * h - bh / 2, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    return out


def load_annotations(path: str | Path) -> dict[str, Any]:
    """Read a COCO annotation json; a broken file is a UserError naming it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(
            f"cannot read COCO annotation json {path}: {e} — fix or remove val_json in the data yaml"
        ) from e
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise UserError(f"{path} is not a COCO annotation json (no 'images'/'categories') — check val_json")
    return data


def coco_evaluate(anno_json: str | Path, pred_json: str | Path, image_ids: Sequence[int] | None = None) -> CocoSummary:
    """Official pycocotools bbox evaluation: its 12 summary numbers (`.AP` = mAP50-95, `.AP50` = mAP50); prints
    COCOeval's summary table. val.py --pycocotools cross-checks our coco_summary with it.

    image_ids restricts the evaluation to the images that were actually validated.
    """
    from pycocotools.coco import COCO  # optional: only val.py --pycocotools needs pycocotools
    from pycocotools.cocoeval import COCOeval  # optional: as above

    with open(pred_json) as f:
        if not json.load(f):  # COCO.loadRes refuses an empty list
            LOGGER.warning(f"WARNING ⚠️ {pred_json} holds no detections — pycocotools mAP is 0")
            return CocoSummary(*[0.0] * 12)
    anno = COCO(str(anno_json))
    pred = anno.loadRes(str(pred_json))
    ev = COCOeval(anno, pred, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted({int(i) for i in image_ids})
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return CocoSummary(*(float(v) for v in ev.stats))


def pycocotools_stats(anno: dict, dets: list[dict]) -> list[float]:
    """pycocotools' 12 COCOeval(bbox) summary numbers from in-memory annotation and result dicts, its prints silenced
    (the reference our evaluator and the benchmarks compare against)."""
    from pycocotools.coco import COCO  # optional: only val.py --pycocotools and the benchmarks need pycocotools
    from pycocotools.cocoeval import COCOeval  # optional: as above

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = anno
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


# --- COCO bbox evaluation with COCOeval's rules, vectorised with numpy ------------------------------------------
# Same parameters as pycocotools' Params.setDetParams, built the same way so the floats are bit-identical.
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RNG = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))  # all, small, medium, large


@dataclass(frozen=True)
class CocoSummary:
    """The 12 numbers of COCOeval.summarize() for bboxes, in its order (-1 where a number has no data)."""

    AP: float  # AP @ IoU .50:.95, all areas, 100 dets
    AP50: float
    AP75: float
    APs: float  # small: area < 32^2
    APm: float  # medium: 32^2 .. 96^2
    APl: float  # large: > 96^2
    AR1: float  # AR @ .50:.95 with 1, 10, 100 dets per image and category
    AR10: float
    AR100: float
    ARs: float
    ARm: float
    ARl: float

    def as_list(self) -> list[float]:
        return [getattr(self, f.name) for f in fields(self)]

    def lines(self) -> list[str]:
        """The summary as COCOeval prints it, one line per number."""
        # COCOeval's order: AP at three IoU ranges, then AP by area; AR at three detection caps, then AR by area
        by_area = [("0.50:0.95", area, 100) for area in ("small", "medium", "large")]
        ap_rows = [(iou, "all", 100) for iou in ("0.50:0.95", "0.50", "0.75")] + by_area
        ar_rows = [("0.50:0.95", "all", md) for md in (1, 10, 100)] + by_area
        rows = [(1, *r) for r in ap_rows] + [(0, *r) for r in ar_rows]
        return [
            f" {'Average Precision' if ap else 'Average Recall':<18} {'(AP)' if ap else '(AR)'} @[ IoU={iou:<9} | "
            f"area={area:>6s} | maxDets={md:>3d} ] = {v:0.3f}"
            for (ap, iou, area, md), v in zip(rows, self.as_list())
        ]


@dataclass
class _Objects:
    """Boxes of one kind (ground truth or detections) as arrays, restricted to the evaluated images / categories."""

    img: np.ndarray  # position in the sorted image ids (also the tie-break order of COCOeval.accumulate)
    cat: np.ndarray  # position in the sorted category ids
    xywh: np.ndarray  # (n, 4) float64, COCO bbox
    area: np.ndarray  # gt: the annotation's 'area'; detections: w * h (what COCO.loadRes sets)
    score: np.ndarray | None = None  # detections only
    crowd: np.ndarray | None = None  # ground truth only
    ann_id: np.ndarray | None = None  # ground truth only

    def take(self, idx: np.ndarray) -> _Objects:
        return _Objects(
            **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx] for f in fields(self)}
        )


def _positions(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each value in the sorted unique ids, whether it is there at all)."""
    if not len(ids):
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    if ids[-1] - ids[0] < 4 * len(values) + 2**20:  # ids dense enough (COCO's are): a lookup table beats a search
        table = np.full(int(ids[-1] - ids[0]) + 1, -1)
        table[ids - ids[0]] = np.arange(len(ids))
        inside = (values >= ids[0]) & (values <= ids[-1])
        pos = np.where(inside, table[np.where(inside, values - ids[0], 0)], -1)
        return pos.clip(min=0), pos >= 0
    pos = np.searchsorted(ids, values).clip(max=len(ids) - 1)
    return pos, ids[pos] == values


def _dense(x: np.ndarray) -> tuple[np.ndarray, int]:
    """x as ranks 0..n-1 (equal values, equal ranks) and n: a sort key for _stable_order."""
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.ravel(), len(uniq)


def _stable_order(*keys: tuple[np.ndarray, int], ties: bool = True) -> np.ndarray:
    """Indices sorting by the keys (first = most significant), ties in index order: np.lexsort of the reversed
    keys, but one argsort of a mixed-radix int64 key, several times faster. Each key is (values in 0..radix-1,
    radix); ties=False when the keys are known to be unique together (no index tie-break needed)."""
    n = len(keys[0][0])
    radix = [r for _, r in keys] + ([n] if ties else [])
    if math.prod(max(r, 1) for r in radix) >= 2**62:  # would overflow: fall back to lexsort
        return np.lexsort([k for k, _ in keys][::-1])
    key = np.zeros(n, np.int64)
    for k, r in keys:
        key = key * r + k
    return np.argsort(key * n + np.arange(n) if ties else key)


def _column(rows: Sequence[dict], key: str, dtype: type, default: Any = None) -> np.ndarray:
    """rows[i][key] as an array; with a default, rows without the key get it."""
    try:
        return np.fromiter(map(operator.itemgetter(key), rows), dtype, len(rows))  # the fast path: key everywhere
    except KeyError:
        if default is None:
            raise
        return np.fromiter((r.get(key, default) for r in rows), dtype, len(rows))


def _bboxes(rows: Sequence[dict]) -> np.ndarray:
    flat = itertools.chain.from_iterable(map(operator.itemgetter("bbox"), rows))
    return np.fromiter(flat, np.float64, 4 * len(rows)).reshape(-1, 4)  # faster than np.array of lists


def _ground_truth(anno: dict, img_ids: np.ndarray, cat_ids: np.ndarray) -> _Objects:
    """Annotations of the evaluated images and known categories, in file order (COCOeval keeps that order)."""
    anns = anno.get("annotations", [])
    xywh = _bboxes(anns)
    area = _column(anns, "area", np.float64, np.nan)  # pycocotools needs it; missing here means the box's area
    area = np.where(np.isnan(area), xywh[:, 2] * xywh[:, 3], area)
    img, ok_i = _positions(_column(anns, "image_id", np.int64), img_ids)
    cat, ok_c = _positions(_column(anns, "category_id", np.int64), cat_ids)
    k = ok_i & ok_c
    crowd = _column(anns, "iscrowd", np.int64, 0) != 0
    return _Objects(img[k], cat[k], xywh[k], area[k], crowd=crowd[k], ann_id=_column(anns, "id", np.int64, 1)[k])


def _detections(dets: Sequence[dict], img_ids: np.ndarray, cat_ids: np.ndarray) -> _Objects:
    """Result dicts on evaluated images and categories (COCOeval drops the others)."""
    xywh = _bboxes(dets)
    img, ok_i = _positions(_column(dets, "image_id", np.int64), img_ids)
    cat, ok_c = _positions(_column(dets, "category_id", np.int64), cat_ids)
    k = ok_i & ok_c
    return _Objects(img[k], cat[k], xywh[k], xywh[k, 2] * xywh[k, 3], score=_column(dets, "score", np.float64)[k])


def _top_detections(dt: _Objects, n_img: int, n_cat: int, max_det: int) -> tuple[_Objects, np.ndarray]:
    """Detections sorted by (category, image, -score) with file order breaking ties, as COCOeval's stable sorts do,
    cut to max_det per (image, category); returns them and each one's score rank in its (image, category)."""
    order = _stable_order((dt.cat, n_cat), (dt.img, n_img), _dense(-dt.score))
    group = dt.cat[order] * n_img + dt.img[order]
    first = np.r_[True, group[1:] != group[:-1]]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    return dt.take(order[rank < max_det]), rank[rank < max_det]


def _bbox_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired xywh boxes with pycocotools' bbIou arithmetic (same operations, so the same floats); for a
    crowd gt the union is the detection's area, i.e. IoU = intersection / detection area."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / np.where(union == 0, 1, union), 0.0)


def _candidate_pairs(dt: _Objects, gt: _Objects, n_img: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(detection, gt, IoU) for every same-(image, category) pair with IoU >= the lowest threshold: no other pair can
    ever match. gt indices refer to gt as given (sorted by (category, image), file order inside)."""
    gkey = gt.cat * n_img + gt.img
    dkey = dt.cat * n_img + dt.img
    lo, hi = np.searchsorted(gkey, dkey, "left"), np.searchsorted(gkey, dkey, "right")
    cnt = hi - lo
    di = np.repeat(np.arange(len(dkey)), cnt)
    gi = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
    iou = _bbox_iou(dt.xywh[di], gt.xywh[gi], gt.crowd[gi])
    k = iou >= min(IOU_THRS[0], 1 - 1e-10)
    return di[k], gi[k], iou[k]


def _gt_ignored(gt: _Objects) -> np.ndarray:
    """(A, G) COCOeval's gt '_ignore' per area range: crowd, or area outside the range (both ends inclusive)."""
    return gt.crowd[None] | _outside(gt.area)


def _pairs_by_priority(pairs: tuple, rank: np.ndarray, ign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per area range, the pairs ordered by (det rank, det, gt not ignored, IoU, gt position): within one detection
    the last free pair above the threshold is the gt COCOeval's loop picks (non-ignored gts first, then the highest
    IoU, later gts winning ties). Returns dets (P,), gts (A, P), IoUs (A, P)."""
    di, gi, iou = pairs
    det = _dense(rank[di] * len(rank) + di)  # detections in matching order
    base = _stable_order(det, _dense(iou), (gi, len(ign[0])), ties=False)  # (det, gt) pairs are unique
    orders = [base[_stable_order((det[0][base], det[1]), (~ig[gi[base]], 2))] for ig in ign]
    return di[orders[0]], np.stack([gi[o] for o in orders]), np.stack([iou[o] for o in orders])


def _greedy_match(
    pairs: tuple, rank: np.ndarray, ign: np.ndarray, crowd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's greedy matching for every area range and IoU threshold at once. Detections of one (image,
    category) are matched in score order, so step r matches the rank-r detection of every group in parallel (groups
    share no gts). Returns the matches as flat (area, threshold, detection, gt) index arrays."""
    di, gi, iou = _pairs_by_priority(pairs, rank, ign)
    n_area, n_thr = len(ign), len(IOU_THRS)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[None, :, None]
    taken = np.zeros((n_area, n_thr, ign.shape[1]), bool)  # COCOeval's gtm > 0
    a_ix, t_ix = np.arange(n_area)[:, None, None], np.arange(n_thr)[None, :, None]
    bounds = np.searchsorted(rank[di], np.arange(max(MAX_DETS) + 1))
    out: list[tuple] = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        if s == e:
            continue
        g, d = gi[:, s:e], di[s:e]
        seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        ok = (iou[:, None, s:e] >= thr) & (~taken[a_ix, t_ix, g[:, None, :]] | crowd[g][:, None, :])
        best = np.maximum.reduceat(np.where(ok, np.arange(1, e - s + 1), 0), seg, axis=2)  # last ok position + 1
        a, t, k = np.nonzero(best)
        won = g[a, best[a, t, k] - 1]
        taken[a, t, won] = True
        out.append((a, t, d[seg][k], won))
    if not out:
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    return tuple(np.concatenate(x) for x in zip(*out))


def _outside(area: np.ndarray) -> np.ndarray:
    """(A, n) area outside each range (COCOeval: area < lo or area > hi, so both ends belong to the range)."""
    lo, hi = np.array(AREA_RNG).T[:, :, None]
    return (area[None] < lo) | (area[None] > hi)


def _match_flags(
    matches: tuple, outside: np.ndarray, gt_ign: np.ndarray, gt_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True-positive and not-ignored flags of the matched (area, threshold, detection) entries, as evaluateImg sets
    them; an unmatched detection is never a tp and is ignored exactly when it is outside the area range. COCOeval
    stores matches as gt ids with 0 meaning 'none', so a match to a gt whose id is 0 counts as unmatched there (the
    gt is still used up), and here too."""
    a, _, d, g = matches
    id0 = gt_id[g] == 0
    return ~id0 & ~gt_ign[a, g], ~(gt_ign[a, g] | (id0 & outside[a, d]))


def _precision_at_recall(
    tp_row: np.ndarray, tp_pos: np.ndarray, n_valid: Callable, cat: np.ndarray, npig: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate's precision for one maxDets from its true positives: (row, position) of each, sorted,
    positions in evaluation order (grouped by category `cat`); n_valid(row, pos): not-ignored detections of the
    row in pos's category up to pos; npig (rows, K) non-ignored gts. Returns precision (rows, K, R) at the recall
    thresholds and the tp counts (rows, K).

    After COCOeval's envelope, precision at recall threshold r is the max precision over the detections whose
    recall reaches r. That max sits on a true positive, so only those are visited: each one's precision goes to the
    bin of how many thresholds its recall reaches, and a reverse running max over the bins is the envelope."""
    n_rows, n_cat, n_rec = npig.shape[0], npig.shape[1], len(REC_THRS)
    group = tp_row * n_cat + cat[tp_pos]
    first = np.r_[True, group[1:] != group[:-1]]
    idx = np.arange(len(group))
    tps = (idx - np.maximum.accumulate(np.where(first, idx, 0)) + 1).astype(np.float64)  # tp count so far
    fps = n_valid(tp_row, tp_pos).astype(np.float64) - tps
    pr = tps / (fps + tps + np.spacing(1))  # COCOeval's expression, so the same floats
    j = np.searchsorted(REC_THRS, tps / npig[tp_row, cat[tp_pos]], "right")  # recall thresholds reached
    key = group * (n_rec + 1) + j  # non-decreasing: recall only grows along a category
    bins = np.zeros(n_rows * n_cat * (n_rec + 1))
    if len(key):
        start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        bins[key[start]] = np.maximum.reduceat(pr, start)
    env = np.maximum.accumulate(bins.reshape(-1, n_rec + 1)[:, ::-1], 1)[:, ::-1]
    precision = env[:, 1:].reshape(n_rows, n_cat, n_rec)  # threshold r: detections reaching more than r of them
    return precision, np.bincount(group, minlength=n_rows * n_cat).reshape(n_rows, n_cat)


def _valid_counter(
    row: np.ndarray, pos: np.ndarray, valid: np.ndarray, inside: np.ndarray, cat: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """n_valid(row, pos) for _precision_at_recall. Unmatched detections are valid where inside the area range, so
    the count is a running count of `inside` (A, n) per area plus the few matched entries (row, pos, valid; sorted
    by (row, pos)) that differ from it. Rows are area * T + threshold."""
    before = (np.cumsum(np.bincount(cat)) - np.bincount(cat))[cat] - 1  # end of the previous category (-1: none)
    run = np.pad(np.cumsum(inside, 1, dtype=np.int32), ((0, 0), (1, 0)))  # run[a, p + 1]: inside up to p
    n_thr, n = len(IOU_THRS), inside.shape[1]
    delta = valid.astype(np.int32) - inside[row // n_thr, pos]
    dkeys = (row * n + pos)[delta != 0]  # sorted: the entries come sorted
    dsum = np.r_[0, np.cumsum(delta[delta != 0])]  # dsum[i]: sum of the first i deltas

    def n_valid(r: np.ndarray, p: np.ndarray) -> np.ndarray:
        a, b = r // n_thr, before[p]
        return (
            run[a, p + 1]
            - run[a, b + 1]
            + dsum[np.searchsorted(dkeys, r * n + p, "right")]
            - dsum[np.searchsorted(dkeys, r * n + b, "right")]
        )

    return n_valid


def _accumulate(
    matches: tuple, dt: _Objects, rank: np.ndarray, gt: _Objects, gt_ign: np.ndarray, n_cat: int
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no
    non-ignored gt in an area range. Detections are taken in COCOeval's order: by category, then score, ties by
    image id and then by rank in the image (its stable sort of the per-image lists concatenated by image id)."""
    n_area, n_thr, n_rec = len(AREA_RNG), len(IOU_THRS), len(REC_THRS)
    npig = np.stack([np.bincount(gt.cat[~ig], minlength=n_cat) for ig in gt_ign])  # (A, K)
    has_gt = (npig > 0)[:, None, :]  # (A, 1, K)
    outside = _outside(dt.area)
    is_tp, valid = _match_flags(matches, outside, gt_ign, gt.ann_id)
    precision = -np.ones((n_thr, n_rec, n_cat, n_area, len(MAX_DETS)))
    recall = -np.ones((n_thr, n_cat, n_area, len(MAX_DETS)))
    order = _stable_order((dt.cat, n_cat), _dense(-dt.score))  # ties: index order = (image, rank) order
    where = np.empty_like(order)
    where[order] = np.arange(len(order))  # each detection's place in that order
    row, pos = matches[0] * n_thr + matches[1], where[matches[2]]
    o = np.argsort(row * len(order) + pos)  # matches sorted by (row, place): cutting to maxDets keeps that
    row, pos, is_tp, valid = row[o], pos[o], is_tp[o], valid[o]
    for m, max_det in enumerate(MAX_DETS):
        keep = rank[order] < max_det
        place = np.cumsum(keep) - 1  # place in the cut order
        k = keep[pos]
        r, p = row[k], place[pos[k]]
        cat = dt.cat[order[keep]]
        n_valid = _valid_counter(r, p, valid[k], ~outside[:, order[keep]], cat)
        pr, n_tp = _precision_at_recall(r[is_tp[k]], p[is_tp[k]], n_valid, cat, np.repeat(npig, n_thr, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = n_tp.reshape(n_area, n_thr, n_cat) / npig[:, None, :]
        pr = pr.reshape(n_area, n_thr, n_cat, n_rec)
        precision[..., m] = np.where(has_gt[..., None], pr, -1).transpose(1, 3, 2, 0)
        recall[..., m] = np.where(has_gt, rc, -1).transpose(1, 2, 0)
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray) -> CocoSummary:
    """COCOeval.summarize's 12 means over the entries that are not -1 (-1 when there are none)."""

    def mean(s: np.ndarray) -> float:
        return float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0

    m100 = MAX_DETS.index(100)
    t50, t75 = np.where(IOU_THRS == 0.5)[0], np.where(IOU_THRS == 0.75)[0]
    ap = [mean(precision[..., a, m100]) for a in range(len(AREA_RNG))]
    ar = [mean(recall[..., a, m100]) for a in range(len(AREA_RNG))]
    return CocoSummary(
        ap[0],
        mean(precision[t50][..., 0, m100]),
        mean(precision[t75][..., 0, m100]),
        *ap[1:],
        *(mean(recall[..., 0, m]) for m in range(len(MAX_DETS))),
        *ar[1:],
    )


def coco_accumulate(
    anno: dict, dets: Sequence[dict], image_ids: Iterable[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval(bbox) evaluate() + accumulate() on an annotation dict and result dicts: precision (T, R, K, A, M),
    recall (T, K, A, M) with pycocotools' axes (IoU thr, recall thr, category by id, area all/small/medium/large,
    maxDets 1/10/100). image_ids restricts the images (like params.imgIds); detections elsewhere are dropped."""
    ids = [im["id"] for im in anno.get("images", [])] if image_ids is None else list(image_ids)
    img_ids = np.unique(np.asarray(ids, dtype=np.int64))
    cat_ids = np.unique(np.asarray([c["id"] for c in anno.get("categories", [])], dtype=np.int64))
    gt = _ground_truth(anno, img_ids, cat_ids)
    gt = gt.take(np.lexsort((gt.img, gt.cat)))  # grouped by (category, image), file order kept inside
    dt, rank = _top_detections(_detections(dets, img_ids, cat_ids), len(img_ids), len(cat_ids), max(MAX_DETS))
    gt_ign = _gt_ignored(gt)
    matches = _greedy_match(_candidate_pairs(dt, gt, len(img_ids)), rank, gt_ign, gt.crowd)
    return _accumulate(matches, dt, rank, gt, gt_ign, len(cat_ids))


def coco_summary(anno: dict, dets: Sequence[dict], image_ids: Iterable[int] | None = None) -> CocoSummary:
    """The 12 COCO bbox numbers (COCOeval.stats) of result dicts against a COCO annotation dict, following
    pycocotools' rules exactly (tests hold it to 1e-4 of pycocotools, in practice the floats agree), vectorised:
    a few hundred thousand detections take about a second. image_ids: evaluate only these images."""
    return _summarize(*coco_accumulate(anno, dets, image_ids))
