"""Detection metrics: prediction/label matching, COCO-style AP, P/R/F1, confusion matrix, fitness.

Conventions: 10 IoU thresholds 0.50:0.05:0.95; AP = COCO 101-point interpolated precision (mean over recall
0, 0.01, ..., 1 of the best precision at recall >= r);
mAP50-95 = mean over thresholds and over classes that have labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from utils.core.plots import plot_confusion_matrix, plot_mc_curve, plot_pr_curve

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10, dtype=torch.float64)  # COCO 0.50:0.05:0.95 (float64 like pycocotools)
RECALL_POINTS = np.linspace(0, 1, 101)  # COCO 101-point interpolation


def fitness(x: np.ndarray) -> np.ndarray | float:
    """Model fitness for best.pt selection: 0.1·mAP50 + 0.9·mAP50-95 of rows [P, R, mAP50, mAP50-95, ...].

    A 2-D array gives one value per row; a 1-D row gives a float.
    """
    x = np.asarray(x, dtype=float)
    w = np.array([0.0, 0.0, 0.1, 0.9])
    if x.ndim == 1:
        return float((x[:4] * w).sum())
    return (x[:, :4] * w).sum(1)


def match_predictions(
    detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor = IOU_THRESHOLDS
) -> torch.Tensor:
    """Which predictions are true positives at each IoU threshold (COCO matching rule).

    detections (n, 6) [x1 y1 x2 y2 conf cls], labels (m, 5) [cls x1 y1 x2 y2], same pixel frame.
    Returns bool (n, len(iouv)). Predictions claim labels in descending confidence; each takes the free label of its
    own class with the highest IoU >= threshold. So each label has at most one prediction, and duplicates and
    wrong-class boxes are false positives — the same rule as pycocotools, so both give the same AP.
    """
    if not len(detections) or not len(labels):
        return torch.zeros(detections.shape[0], len(iouv), dtype=torch.bool, device=detections.device)
    iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float()).cpu().numpy()  # (m, n)
    d = detections.detach().cpu().numpy()
    out = _match(iou, labels[:, 0].cpu().numpy(), d[:, 5], d[:, 4], iouv.cpu().double().numpy())
    return torch.from_numpy(out).to(detections.device)


def _match(iou: np.ndarray, label_cls: np.ndarray, det_cls: np.ndarray, conf: np.ndarray, t: np.ndarray) -> np.ndarray:
    """match_predictions on numpy arrays: iou (m, n) labels x detections -> bool (n, len(t))."""
    iou = np.where(label_cls[:, None] == det_cls[None], iou, 0.0).T.astype(np.float64)  # wrong class never matches
    iou[iou < t[0]] = 0.0  # below the loosest threshold a pair never matches
    cand = iou > 0
    shared = cand.sum(0) > 1  # labels wanted by several predictions: only they need the sequential COCO rule
    exclusive = ~cand[:, shared].any(1)
    out = np.zeros((len(iou), len(t)), dtype=bool)
    # a prediction whose labels nobody else wants gets its best one whenever that IoU passes the threshold
    out[exclusive] = iou[exclusive].max(1, initial=0.0)[:, None] >= t[None]
    contested = np.nonzero(~exclusive)[0]
    if len(contested):
        order = contested[np.argsort(-conf[contested], kind="stable")]
        out[order] = _sequential_match(iou[order], t)
    return out


def _sequential_match(iou: np.ndarray, t: np.ndarray) -> np.ndarray:
    """COCO greedy matching of predictions (rows, in descending confidence) to labels (columns) at every threshold
    at once: row k takes, per threshold, the still-free label with the highest IoU >= that threshold."""
    iou = iou[:, iou.any(0)]  # only labels some of these predictions can match
    taken = np.zeros((iou.shape[1], len(t)), dtype=bool)  # (labels, thresholds)
    out = np.zeros((len(iou), len(t)), dtype=bool)
    cols = np.arange(len(t))
    for k, row in enumerate(iou):
        score = np.where(taken, -1.0, row[:, None])  # (labels, thresholds), taken labels unavailable
        best = score.argmax(0)
        ok = score[best, cols] >= t
        taken[best[ok], cols[ok]] = True
        out[k] = ok
    return out


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one precision/recall curve (points in descending-confidence order) by COCO 101-point interpolation.

    Returns (ap, mpre, mrec): the precision envelope mpre over mrec = [0, recall..., 1] for plotting.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # envelope: best precision at any recall >= this one
    # COCO: each recall point takes the envelope at the first curve point reaching it, 0 where never reached.
    q = np.zeros(len(RECALL_POINTS))
    if len(recall):
        envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        valid = idx < len(recall)
        q[valid] = envelope[idx[valid]]
    return float(q.mean()), mpre, mrec


def _smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box-filter smoothing over a fraction f of the points (stabilises the max-F1 confidence pick)."""
    nf = round(len(y) * f * 2) // 2 + 1  # odd number of points
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]))
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def ap_per_class(
    tp: np.ndarray,
    conf: np.ndarray,
    pred_cls: np.ndarray,
    target_cls: np.ndarray,
    plot: bool = False,
    save_dir: str | Path = ".",
    names: dict[int, str] | None = None,
    eps: float = 1e-16,
):
    """Per-class AP at every IoU threshold, plus P, R, F1 at the confidence that maximises mean F1.

    tp (n, t) bool from match_predictions over the whole set, conf (n,), pred_cls (n,), target_cls (m,) of all labels.
    Returns (tp, fp, p, r, f1, ap, classes): per class in `classes` (those with labels) TP/FP counts, P, R, F1 at
    the chosen confidence, and ap (nc, t). With plot=True writes PR_curve.png, F1/P/R_curve.png into save_dir.
    """
    tp, conf, pred_cls = np.asarray(tp, dtype=float), np.asarray(conf), np.asarray(pred_cls)
    tp = tp.reshape(len(conf), -1)
    i = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    classes, n_labels = np.unique(np.asarray(target_cls), return_counts=True)
    nc, nt = len(classes), tp.shape[1]
    px = np.linspace(0, 1, 1000)  # confidence axis for the curves
    ap, p, r, prc = np.zeros((nc, nt)), np.zeros((nc, 1000)), np.zeros((nc, 1000)), []
    for ci, c in enumerate(classes):
        k = pred_cls == c
        if not k.any():
            prc.append(np.zeros(1000))
            continue
        tpc, fpc = tp[k].cumsum(0), (1 - tp[k]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-px, -conf[k], recall[:, 0], left=0)  # conf decreases along the curve, hence negatives
        p[ci] = np.interp(-px, -conf[k], precision[:, 0], left=1)
        for j in range(nt):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                prc.append(np.interp(px, mrec, mpre))  # precision at recall px, IoU 0.5
    f1 = 2 * p * r / (p + r + eps)
    if plot:
        _plot_curves(px, np.array(prc).reshape(nc, -1), ap, f1, p, r, classes, Path(save_dir), names or {})
    best = int(_smooth(f1.mean(0), 0.1).argmax()) if nc else 0
    p, r, f1 = p[:, best], r[:, best], f1[:, best]
    tp_n = (r * n_labels).round()
    fp_n = (tp_n / (p + eps) - tp_n).round()
    return tp_n, fp_n, p, r, f1, ap, classes.astype(int)


def _plot_curves(px, prc, ap, f1, p, r, classes, save_dir: Path, names: dict[int, str]) -> None:
    """Write the PR curve and the F1/P/R-vs-confidence curves (imports plotting only when asked)."""
    labels = [names.get(int(c), str(int(c))) for c in classes]
    plot_pr_curve(px, prc, ap, save_dir / "PR_curve.png", labels)
    plot_mc_curve(px, f1, save_dir / "F1_curve.png", labels, ylabel="F1")
    plot_mc_curve(px, p, save_dir / "P_curve.png", labels, ylabel="Precision")
    plot_mc_curve(px, r, save_dir / "R_curve.png", labels, ylabel="Recall")


def _greedy_one_to_one(li: np.ndarray, di: np.ndarray) -> np.ndarray:
    """Indices of the pairs kept when (label, detection) pairs, sorted best-first, are taken greedily one-to-one."""
    if len(np.unique(li)) == len(li) and len(np.unique(di)) == len(di):
        return np.arange(len(li))  # no label or detection appears twice: every pair is kept
    used_l, used_d, kept = set(), set(), []
    for k, (lab, det) in enumerate(zip(li.tolist(), di.tolist())):
        if lab not in used_l and det not in used_d:
            used_l.add(lab)
            used_d.add(det)
            kept.append(k)
    return np.array(kept, dtype=int)


class ConfusionMatrix:
    """Class confusion matrix with a background row/column, YOLOv5 layout: matrix[predicted, true].

    Predictions below `conf` are ignored; a prediction and a label pair up (one-to-one, highest IoU first) when their
    IoU exceeds `iou_thres`, whatever their classes. An unpaired label counts in the background row (missed); an
    unpaired prediction in the background column (false alarm).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """detections (n, 6) [x1 y1 x2 y2 conf cls] or None, labels (m, 5) [cls x1 y1 x2 y2] of one image."""
        gt_cls = labels[:, 0].long().cpu().numpy()
        if detections is None or not len(detections):
            np.add.at(self.matrix, (self.nc, gt_cls), 1)
            return
        detections = detections[detections[:, 4] > self.conf]
        det_cls = detections[:, 5].long().cpu().numpy()
        iou = (
            box_iou(labels[:, 1:5].float(), detections[:, :4].float()).cpu().numpy()
            if len(labels)
            else np.zeros((0, len(detections)))
        )
        li, di = np.nonzero(iou > self.iou_thres)
        order = np.argsort(-iou[li, di], kind="stable")
        li, di = li[order], di[order]
        keep = _greedy_one_to_one(li, di)
        li, di = li[keep], di[keep]
        np.add.at(self.matrix, (det_cls[di], gt_cls[li]), 1)
        np.add.at(self.matrix, (self.nc, np.delete(gt_cls, li)), 1)  # missed labels
        np.add.at(self.matrix, (np.delete(det_cls, di), self.nc), 1)  # false alarms

    def plot(self, normalize: bool = True, save_dir: str | Path = ".", names: dict[int, str] | None = None) -> Path:
        """Save confusion_matrix.png (columns normalised to sum 1 when normalize) and return its path."""
        names = names or {}
        labels = [names.get(i, str(i)) for i in range(self.nc)] + ["background"]
        m = self.matrix / (self.matrix.sum(0, keepdims=True) + 1e-9) if normalize else self.matrix
        return plot_confusion_matrix(m, labels, Path(save_dir) / "confusion_matrix.png", normalize)


class DetectionStats:
    """Collects per-image matching results over a validation set and turns them into the YOLOv5 summary numbers."""

    def __init__(self, iouv: torch.Tensor = IOU_THRESHOLDS):
        self.iouv = iouv
        self.correct, self.conf, self.pred_cls, self.target_cls = [], [], [], []

    def update(self, detections: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Add one image: detections (n, 6) xyxy conf cls, labels (m, 5) cls xyxy (same pixel frame).
        Returns the (n, t) true-positive matrix for this image (numpy bool)."""
        d = detections.detach().float().cpu().numpy()
        lb = labels.detach().float().cpu().numpy()
        t = self.iouv.cpu().double().numpy()
        if len(d) and len(lb):  # torchvision IoU, then matching on numpy (one device->host copy per image)
            iou = box_iou(torch.from_numpy(lb[:, 1:5]), torch.from_numpy(d[:, :4])).numpy()
            correct = _match(iou, lb[:, 0], d[:, 5], d[:, 4], t)
        else:
            correct = np.zeros((len(d), len(t)), dtype=bool)
        self.correct.append(correct)
        self.conf.append(d[:, 4])
        self.pred_cls.append(d[:, 5])
        self.target_cls.append(lb[:, 0])
        return correct

    def compute(
        self, plot: bool = False, save_dir: str | Path = ".", names: dict[int, str] | None = None
    ) -> dict[str, np.ndarray | float]:
        """Summary dict: mp, mr, map50, map (means over classes with labels); per class arrays `classes`, `p`, `r`,
        `ap50`, `ap` (AP50-95) and `nt` (instances per class over all nc ids, for the table)."""
        t = len(self.iouv)
        correct = np.concatenate(self.correct, 0) if self.correct else np.zeros((0, t), dtype=bool)
        conf = np.concatenate(self.conf) if self.conf else np.zeros(0)
        pred_cls = np.concatenate(self.pred_cls) if self.pred_cls else np.zeros(0)
        target_cls = np.concatenate(self.target_cls).astype(int) if self.target_cls else np.zeros(0, dtype=int)
        out = {
            "mp": 0.0,
            "mr": 0.0,
            "map50": 0.0,
            "map": 0.0,
            "classes": np.zeros(0, dtype=int),
            "p": np.zeros(0),
            "r": np.zeros(0),
            "ap50": np.zeros(0),
            "ap": np.zeros(0),
            "nt": np.bincount(target_cls, minlength=len(names or {})),
        }
        if len(target_cls) and len(correct):
            _, _, p, r, _, ap, classes = ap_per_class(correct, conf, pred_cls, target_cls, plot, save_dir, names)
            out.update(
                mp=float(p.mean()),
                mr=float(r.mean()),
                map50=float(ap[:, 0].mean()),
                map=float(ap.mean(1).mean()),
                classes=classes,
                p=p,
                r=r,
                ap50=ap[:, 0],
                ap=ap.mean(1),
            )
        return out
