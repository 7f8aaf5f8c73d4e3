"""NMS against a brute-force greedy reference, and its filters (conf, classes, agnostic, multi-label, max_det)."""

import pytest
import torch

from utils.core.errors import UserError
from utils.evaluation.nms import non_max_suppression


def _iou(a, b):
    """IoU of two xyxy boxes, written out by hand so the reference shares no code with torchvision."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference(pred, conf_thres, iou_thres, agnostic=False):
    """Greedy per-class NMS over (box, best class) rows; returns kept row indices of pred, by score descending."""
    rows = []
    for i, r in enumerate(pred.tolist()):
        cx, cy, w, h, obj, *cls = r
        scores = [obj * c for c in cls]
        c = max(range(len(cls)), key=lambda k: scores[k])
        if obj > conf_thres and scores[c] > conf_thres:
            rows.append((scores[c], i, c, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    rows.sort(key=lambda t: -t[0])
    kept = []
    for s, i, c, box in rows:
        if all(_iou(box, kb) <= iou_thres for _, _, kc, kb in kept if agnostic or kc == c):
            kept.append((s, i, c, box))
    return [i for _, i, _, _ in kept]


def _random_pred(n=400, nc=3, seed=0, size=160.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * 40 + 4
    obj = torch.rand(n, 1, generator=g)
    cls = torch.rand(n, nc, generator=g)
    return torch.cat((xy, wh, obj, cls), 1)


def _kept_indices(pred, out):
    """Map each output row back to the input row it came from (boxes are unique in random data)."""
    from utils.core.boxes import xywh2xyxy

    boxes = xywh2xyxy(pred[:, :4])
    return [int((boxes - row[:4]).abs().sum(1).argmin()) for row in out]


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force(seed, agnostic):
    pred = _random_pred(seed=seed)
    out = non_max_suppression(pred[None], conf_thres=0.1, iou_thres=0.4, agnostic=agnostic, max_det=1000)[0]
    ref = _reference(pred, 0.1, 0.4, agnostic)
    assert len(ref) > 20  # the case is not trivial
    assert _kept_indices(pred, out) == ref
    assert out.shape[1] == 6
    assert torch.all(out[:-1, 4] >= out[1:, 4])  # sorted by confidence


def test_score_is_obj_times_cls_and_conf_filters():
    # one box, obj 0.5, class scores 0.1/0.8 -> conf 0.4 class 1
    pred = torch.tensor([[[50.0, 50.0, 20.0, 10.0, 0.5, 0.1, 0.8]]])
    out = non_max_suppression(pred, conf_thres=0.25)[0]
    assert torch.allclose(out, torch.tensor([[40.0, 45.0, 60.0, 55.0, 0.4, 1.0]]))
    assert len(non_max_suppression(pred, conf_thres=0.45)[0]) == 0  # obj passes, obj×cls does not
    assert len(non_max_suppression(pred, conf_thres=0.6)[0]) == 0  # obj itself fails


def test_classes_filter_multilabel_and_max_det():
    pred = _random_pred(n=300, nc=4, seed=3)
    out = non_max_suppression(pred[None], conf_thres=0.05, iou_thres=0.5, classes=[2])[0]
    assert len(out) > 0 and set(out[:, 5].tolist()) == {2.0}
    single = non_max_suppression(pred[None], conf_thres=0.05, iou_thres=0.5, max_det=1000)[0]
    multi = non_max_suppression(pred[None], conf_thres=0.05, iou_thres=0.5, multi_label=True, max_det=1000)[0]
    assert len(multi) > len(single)  # boxes above threshold in several classes yield several rows
    capped = non_max_suppression(pred[None], conf_thres=0.05, iou_thres=0.5, max_det=7)[0]
    assert torch.equal(capped, single[:7])


def test_batch_tuple_input_and_empty_images():
    pred = _random_pred(n=50, seed=4)
    empty = pred.clone()
    empty[:, 4] = 0.0  # nothing passes the objectness threshold
    batch = torch.stack((pred, empty))
    out = non_max_suppression((batch, ["raw outputs"]), conf_thres=0.2)  # eval forward tuple accepted
    assert len(out) == 2 and len(out[0]) > 0 and out[1].shape == (0, 6)


def test_identical_boxes_different_classes_kept_unless_agnostic():
    pred = torch.tensor([[[50.0, 50.0, 20.0, 20.0, 0.9, 1.0, 0.0], [50.0, 50.0, 20.0, 20.0, 0.8, 0.0, 1.0]]])
    assert len(non_max_suppression(pred)[0]) == 2
    kept = non_max_suppression(pred, agnostic=True)[0]
    assert len(kept) == 1 and kept[0, 5] == 0


def test_bad_thresholds_are_user_errors():
    pred = _random_pred(n=5)[None]
    with pytest.raises(UserError, match="--conf-thres"):
        non_max_suppression(pred, conf_thres=1.5)
    with pytest.raises(UserError, match="--iou-thres"):
        non_max_suppression(pred, iou_thres=-0.1)
