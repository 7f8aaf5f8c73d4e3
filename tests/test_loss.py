"""utils/training/loss: hand-built anchor/cell assignments, perfect and imperfect predictions with known loss values,
label smoothing, focal loss, empty targets, gain scaling, AMP dtypes and gradient flow through a micro ConvNeXt
model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import complete_box_iou, sigmoid_focal_loss

from models.yolo import Detect, Model
from tests.fixtures_models import micro_cfg
from utils.core.boxes import xywh2xyxy
from utils.core.errors import UserError
from utils.training.loss import ComputeLoss, FocalBCE, scale_loss_gains

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0}
BIG = 20.0  # logit magnitude for "certain" predictions: BCE ≈ 2e-9
# Anchors in grid units per level (na = 3); the third anchor of P3 / second of P4 / first of P5 is too far off
# for target A (wh ratio > 4) and B's P4 anchor 2 sits exactly on the threshold (ratio 4.0, rejected).
ANCHORS = ([1, 1, 2, 2, 8, 8], [0.5, 0.5, 4, 4, 1, 2], [3, 3, 0.3, 0.3, 0.5, 0.25])
IMGSZ = 64  # grids 8x8, 4x4, 2x2
# A: image 0, class 1, centre (3.3, 4.7) and wh 1.5 in P3 grid units. B: image 1, class 2, centre (0.3, 6.6), wh 1.
TARGETS = torch.tensor([[0, 1, 3.3 / 8, 4.7 / 8, 1.5 / 8, 1.5 / 8], [1, 2, 0.3 / 8, 6.6 / 8, 1 / 8, 1 / 8]])


class TinyDetector(nn.Module):
    """Just what ComputeLoss reads: model.hyp, model.model[-1] = Detect with strides and grid-unit anchors."""

    def __init__(self, hyp: dict, nc: int = 3) -> None:
        super().__init__()
        det = Detect(nc=nc, anchors=ANCHORS, ch=(4, 4, 4))
        det.stride = torch.tensor([8.0, 16.0, 32.0])
        self.model = nn.Sequential(det)
        self.hyp = hyp


def blank_raw(bs: int = 2, nc: int = 3, fill: float = -BIG) -> list[torch.Tensor]:
    """Raw outputs for a 64 px batch: obj and class logits at `fill`, box logits 0."""
    p = []
    for s in (8, 16, 32):
        n = IMGSZ // s
        x = torch.zeros(bs, 3, n, n, 5 + nc)
        x[..., 4:] = fill
        p.append(x)
    return p


def perfect_raw(loss: ComputeLoss, targets: torch.Tensor, nc: int = 3) -> list[torch.Tensor]:
    """Logits whose decoded boxes equal the assigned targets, obj/cls +BIG where assigned and -BIG elsewhere."""
    p = blank_raw(nc=nc)
    tcls, tbox, indices, anch = loss.build_targets(p, targets)
    for i, (b, a, gj, gi) in enumerate(indices):
        sxy = (tbox[i][:, :2] + 0.5) / 2  # invert xy = 2σ - 0.5
        swh = (tbox[i][:, 2:] / anch[i]).sqrt() / 2  # invert wh = (2σ)² anchor
        p[i][b, a, gj, gi, :4] = torch.logit(torch.cat((sxy, swh), 1).double()).float()
        p[i][b, a, gj, gi, 4] = BIG
        p[i][b, a, gj, gi, 5 + tcls[i]] = BIG
    return p


def assignment_set(loss: ComputeLoss, targets: torch.Tensor) -> set[tuple[int, ...]]:
    """{(level, image, anchor, gj, gi)} from build_targets; fails on a duplicated assignment (e.g. a clamped
    off-grid neighbour landing on the target's own cell)."""
    _, _, indices, _ = loss.build_targets(blank_raw(), targets)
    rows = [(i, *map(int, row)) for i, idx in enumerate(indices) for row in zip(*idx)]
    assert len(rows) == len(set(rows)), "duplicate assignments"
    return set(rows)


def cells(level: int, b: int, anchors: tuple[int, ...], ji: list[tuple[int, int]]) -> set[tuple[int, ...]]:
    return {(level, b, a, gj, gi) for a in anchors for gj, gi in ji}


def test_build_targets_exact_anchors_cells_and_neighbours():
    loss = ComputeLoss(TinyDetector(HYP))
    expected = (
        # A: P3 x frac .3 -> left neighbour, y frac .7 -> lower; anchor 2 (8x8 vs 1.5) rejected.
        cells(0, 0, (0, 1), [(4, 3), (4, 2), (5, 3)])
        # A on P4: (1.65, 2.35), wh .75 -> right and upper neighbours; anchor 1 (4x4) rejected.
        | cells(1, 0, (0, 2), [(2, 1), (2, 2), (1, 1)])
        # A on P5: (0.825, 1.175), wh .375 -> right and upper neighbours; anchor 0 (3x3, ratio 8) rejected.
        | cells(2, 0, (1, 2), [(1, 0), (1, 1), (0, 0)])
        # B on P3: x = 0.3 has no left cell (not beyond the grid); y frac .6 -> lower neighbour.
        | cells(0, 1, (0, 1), [(6, 0), (7, 0)])
        # B on P4: wh .5 vs anchor (1, 2): ratio exactly 4.0 -> rejected; only anchor 0; upper neighbour.
        | cells(1, 1, (0,), [(3, 0), (2, 0)])
        # B on P5: (0.075, 1.65): no neighbour is nearer the centre.
        | cells(2, 1, (1, 2), [(1, 0)])
    )
    assert assignment_set(loss, TARGETS) == expected


def test_build_targets_boxes_classes_and_anchors():
    loss = ComputeLoss(TinyDetector(HYP))
    tcls, tbox, indices, anch = loss.build_targets(blank_raw(), TARGETS[:1])
    b, a, gj, gi = indices[0]
    rows = {(int(a[k]), int(gj[k]), int(gi[k])): k for k in range(len(b))}
    k = rows[(1, 4, 2)]  # A, anchor 1, left neighbour cell
    assert torch.allclose(tbox[0][k], torch.tensor([1.3, 0.7, 1.5, 1.5]), atol=1e-5)  # xy relative to the cell
    assert torch.equal(anch[0][k], torch.tensor([2.0, 2.0]))
    assert set(tcls[0].tolist()) == {1}
    assert all(((t[:, :2] > -0.5) & (t[:, :2] < 1.5)).all() for t in tbox)  # reachable by 2σ - 0.5


def test_perfect_prediction_gives_zero_loss():
    loss = ComputeLoss(TinyDetector(HYP))
    total, items = loss(perfect_raw(loss, TARGETS), TARGETS)
    assert items.shape == (3,) and total.shape == (1,)
    # obj: float32 CIoU of identical boxes is 1 - ~1e-7, and against a +20 logit that costs 20 * 1e-7 per cell.
    assert items[0] < 1e-6 and items[1] < 2e-5 and items[2] < 1e-7
    assert torch.allclose(total, items.sum() * 2)


def test_known_box_error_gives_expected_box_and_obj_loss():
    loss = ComputeLoss(TinyDetector(HYP))
    p = perfect_raw(loss, TARGETS)
    _, tbox, indices, anch = loss.build_targets(p, TARGETS)
    b, a, gj, gi = (x[0] for x in indices[1])  # first P4 assignment
    p[1][b, a, gj, gi, 2] += 0.7  # wider than the target
    total, items = loss(p, TARGETS)
    s = p[1][b, a, gj, gi, :4].sigmoid()
    pred = torch.cat((s[:2] * 2 - 0.5, (s[2:] * 2) ** 2 * anch[1][0]))
    ciou = complete_box_iou(xywh2xyxy(pred[None]), xywh2xyxy(tbox[1][:1]))[0, 0]
    assert 0.5 < ciou < 0.95  # a real imperfection
    n1 = len(indices[1][0])
    assert items[0] == pytest.approx(HYP["box"] * (1 - ciou.item()) / n1, abs=2e-6)
    # That cell's objectness target is now its CIoU while the logit still says +20.
    obj_cell = F.binary_cross_entropy_with_logits(torch.tensor(BIG), ciou).item()
    assert items[1] == pytest.approx(HYP["obj"] * 1.0 * obj_cell / p[1][..., 4].numel(), rel=1e-3)
    assert items[2] < 1e-6
    assert torch.allclose(total, items.sum() * 2)


def test_cls_loss_needs_more_than_one_class():
    targets = TARGETS.clone()
    targets[:, 1] = 0
    loss = ComputeLoss(TinyDetector(HYP, nc=1))
    p = perfect_raw(loss, targets, nc=1)
    for x in p:
        x[..., 5] = -BIG  # a confidently wrong class logit changes nothing with nc = 1
    assert loss(p, targets)[1][2] == 0


def test_label_smoothing_raises_cls_loss_by_known_amount():
    plain = ComputeLoss(TinyDetector(HYP))
    smooth = ComputeLoss(TinyDetector({**HYP, "label_smoothing": 0.1}))
    p = perfect_raw(plain, TARGETS)
    _, items0 = plain(p, TARGETS)
    _, items1 = smooth(p, TARGETS)
    # targets 0.95 / 0.05 against logits ±20: BCE = 20 * 0.05 = 1.0 per element, mean 1.0 on each of 3 levels.
    assert items1[2] == pytest.approx(HYP["cls"] * 3 * 1.0, rel=1e-5)
    assert items0[2] < 1e-6
    assert torch.allclose(items1[:2], items0[:2])  # box and objectness untouched


def test_focal_wrapper_matches_torchvision_and_keeps_pos_weight():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(50, 4, generator=g) * 3, torch.rand(50, 4, generator=g)
    focal = FocalBCE(nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0])), gamma=1.5)
    ref = sigmoid_focal_loss(x, t, alpha=0.25, gamma=1.5, reduction="mean")
    assert focal(x, t).item() == pytest.approx(ref.item(), rel=1e-5)
    heavier = FocalBCE(nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0])), gamma=1.5)
    assert heavier(x, t) > focal(x, t)


def test_focal_loss_scales_objectness_by_known_factor():
    plain = ComputeLoss(TinyDetector(HYP))
    focal = ComputeLoss(TinyDetector({**HYP, "fl_gamma": 1.5}))
    p = blank_raw(fill=0.0)  # p = 0.5 everywhere, all-negative objectness targets
    empty = torch.zeros(0, 6)
    lobj0, lobj1 = plain(p, empty)[1][1], focal(p, empty)[1][1]
    assert lobj0 == pytest.approx(math.log(2) * (4.0 + 1.0 + 0.4), rel=1e-5)
    assert (lobj1 / lobj0).item() == pytest.approx(0.75 * 0.5**1.5, rel=1e-5)  # alpha_t (1 - p_t)^gamma


def test_empty_targets_give_objectness_only():
    loss = ComputeLoss(TinyDetector(HYP))
    total, items = loss(blank_raw(fill=0.3), torch.zeros(0, 6))
    assert torch.isfinite(total).all() and items[0] == 0 and items[2] == 0 and items[1] > 0
    assert torch.allclose(total, items.sum() * 2)


def test_scale_loss_gains_numbers():
    hyp = {**HYP, "lr0": 0.01}
    out = scale_loss_gains(hyp, nl=3, nc=2, imgsz=320)
    assert out is not hyp and hyp["box"] == 0.05  # input untouched
    assert out["box"] == pytest.approx(0.05) and out["cls"] == pytest.approx(0.5 * 2 / 80)
    assert out["obj"] == pytest.approx(0.25) and out["lr0"] == 0.01 and out["anchor_t"] == 4.0
    out4 = scale_loss_gains(hyp, nl=4, nc=80, imgsz=1280)
    assert out4["box"] == pytest.approx(0.0375) and out4["cls"] == pytest.approx(0.375)
    assert out4["obj"] == pytest.approx(3.0)


def test_missing_hyp_key_is_a_user_error():
    with pytest.raises(UserError, match="anchor_t"):
        ComputeLoss(TinyDetector({k: v for k, v in HYP.items() if k != "anchor_t"}))


def test_low_precision_inputs_give_float32_loss():
    loss = ComputeLoss(TinyDetector(HYP))
    p = perfect_raw(loss, TARGETS)
    p[0][..., :4] += 0.3
    ref, ref_items = loss([x.bfloat16().float() for x in p], TARGETS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, items = loss([x.bfloat16() for x in p], TARGETS)
    assert out.dtype == torch.float32 and torch.allclose(items, ref_items, rtol=1e-5)


def test_gradient_reaches_every_parameter_of_micro_model():
    torch.manual_seed(0)
    model = Model(micro_cfg(nc=2)).train()
    model.hyp = scale_loss_gains(HYP, model.model[-1].nl, 2, 128)
    # Sizes from 8 to 128 px and several aspect ratios so every anchor of every level gets a box.
    wh = [(0.06, 0.1), (0.12, 0.25), (0.25, 0.18), (0.25, 0.5), (0.5, 0.35), (0.45, 0.9), (0.9, 0.7), (1.0, 1.0)]
    targets = torch.tensor([[i % 2, i % 2, 0.3 + 0.05 * i, 0.6 - 0.04 * i, w, h] for i, (w, h) in enumerate(wh)])
    total, items = ComputeLoss(model)(model(torch.rand(2, 3, 128, 128)), targets)
    total.backward()
    assert (items > 0).all()
    params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    assert params and not [n for n, q in params if q.grad is None]
    assert not [n for n, q in params if not torch.isfinite(q.grad).all()]
    assert not [n for n, q in params if not q.grad.abs().sum() > 0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_matches_cpu():
    loss_cpu = ComputeLoss(TinyDetector(HYP))
    p = perfect_raw(loss_cpu, TARGETS)
    p[1][..., :4] += 0.2
    ref = loss_cpu([x.half().float() for x in p], TARGETS)[1]
    loss_gpu = ComputeLoss(TinyDetector(HYP).cuda())
    with torch.autocast("cuda"):
        out, items = loss_gpu([x.half().cuda() for x in p], TARGETS)
    assert out.dtype == torch.float32 and torch.allclose(items.cpu(), ref, rtol=1e-4, atol=1e-7)
