"""YOLOv5 training loss: anchor matching by wh ratio, CIoU box loss, IoU-target objectness, BCE classification.

`ComputeLoss(model)(raw, targets) -> (loss (1,), items (3,) = [box, obj, cls])`, where `raw` is the Detect training
output (list of nl tensors (B, na, ny, nx, 5 + nc) of logits) and `targets` rows are
`[img_idx, cls, cx, cy, w, h]` normalised 0-1. Gains come from `model.hyp`, already scaled by `scale_loss_gains`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torchvision.ops import complete_box_iou_loss

from utils.core.boxes import xywh2xyxy
from utils.core.errors import UserError
from utils.core.parallel import unwrap

REQUIRED_HYP = ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t")
NEIGHBOUR_OFFSET = 0.5  # a target also claims a neighbour cell when its centre is within 0.5 of that cell's edge
FOCAL_ALPHA = 0.25  # YOLOv5 / RetinaNet alpha


def scale_loss_gains(hyp: dict, nl: int, nc: int, imgsz: int) -> dict:
    """New hyp dict with YOLOv5's train.py gain scaling: box ×3/nl, cls ×nc/80×3/nl, obj ×(imgsz/640)²×3/nl."""
    out = dict(hyp)
    layers = 3 / nl  # the recipes were tuned for 3 detection levels
    out["box"] = hyp["box"] * layers
    out["cls"] = hyp["cls"] * nc / 80 * layers  # tuned for COCO's 80 classes
    out["obj"] = hyp["obj"] * (imgsz / 640) ** 2 * layers  # more cells at larger sizes -> more negatives
    return out


def level_balance(nl: int) -> list[float]:
    """Objectness weight per level, P3 first: small-object levels have more cells and weigh more (YOLOv5 values)."""
    return [4.0, 1.0, 0.4] if nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][:nl]


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """(positive, negative) class targets with label smoothing eps: 1 - eps/2 and eps/2."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalBCE(nn.Module):
    """Focal loss on top of a pos-weighted BCEWithLogits, mean-reduced.

    With pos_weight 1 this equals torchvision.ops.sigmoid_focal_loss(reduction="mean"); the wrapper exists so that
    cls_pw / obj_pw keep working with fl_gamma > 0, as in YOLOv5.
    """

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float, alpha: float = FOCAL_ALPHA) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(pos_weight=bce.pos_weight, reduction="none")
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)  # probability given to the "true" side (soft targets allowed)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha_t * (1.0 - p_t) ** self.gamma).mean()


class ComputeLoss:
    """YOLOv5 loss for a Model whose last layer is Detect; hyperparameters from `model.hyp`."""

    def __init__(self, model: nn.Module) -> None:
        model = unwrap(model)
        h: dict[str, Any] = getattr(model, "hyp", None) or {}
        missing = [k for k in REQUIRED_HYP if k not in h]
        if missing:
            raise UserError(
                f"loss hyperparameters {missing} missing — model.hyp (the --hyp yaml) — add them, "
                f"e.g. from data/hyps/hyp.scratch-low.yaml"
            )
        det = model.model[-1]
        device = next(model.parameters()).device
        self.hyp = h
        self.nl, self.na, self.nc = det.nl, det.na, det.nc
        self.anchors = det.anchors.detach().clone().float().to(device)  # (nl, na, 2) grid units
        self.anchor_t = float(h["anchor_t"])
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(h["cls_pw"])], device=device))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(h["obj_pw"])], device=device))
        gamma = float(h.get("fl_gamma", 0.0) or 0.0)
        self.bce_cls = FocalBCE(bce_cls, gamma) if gamma > 0 else bce_cls
        self.bce_obj = FocalBCE(bce_obj, gamma) if gamma > 0 else bce_obj
        self.cp, self.cn = smooth_bce(float(h.get("label_smoothing", 0.0) or 0.0))
        self.balance = level_balance(self.nl)

    def __call__(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss (1,) = (lbox + lobj + lcls) × batch size, detached [lbox, lobj, lcls] (3,))."""
        device = p[0].device
        with torch.autocast(device.type, enabled=False):  # AMP: losses and IoUs in float32
            p = [pi.float() for pi in p]
            targets = targets.to(device=device, dtype=torch.float32)
            return self._loss(p, targets)

    def _loss(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = p[0].device
        lbox, lobj, lcls = (torch.zeros(1, device=device) for _ in range(3))
        tcls, tbox, indices, anch = self.build_targets(p, targets)
        for i, pi in enumerate(p):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], device=device)
            if b.numel():
                ps = pi[b, a, gj, gi]  # (n, 5 + nc) predictions at the assigned cells
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anch[i]
                box_loss = complete_box_iou_loss(
                    xywh2xyxy(torch.cat((pxy, pwh), 1)), xywh2xyxy(tbox[i]), reduction="none"
                )  # 1 - CIoU
                lbox = lbox + box_loss.mean()
                tobj[b, a, gj, gi] = (1.0 - box_loss).detach().clamp(0)  # objectness target = CIoU (gr = 1)
                if self.nc > 1:  # one class: objectness alone decides
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(b.numel(), device=device), tcls[i]] = self.cp
                    lcls = lcls + self.bce_cls(ps[:, 5:], t)
            lobj = lobj + self.bce_obj(pi[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.hyp["box"], lobj * self.hyp["obj"], lcls * self.hyp["cls"]
        bs = p[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[list, list, list, list]:
        """Assign targets to (level, anchor, cell): per level class ids, boxes (xy offset from the cell, wh) in
        grid units, indices (b, anchor, gj, gi) and the matched anchors (grid units)."""
        device = targets.device
        tcls, tbox, indices, anch = [], [], [], []
        # Unit steps to the cell itself and the four neighbours (left, up, right, down), scaled by the offset.
        steps = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * NEIGHBOUR_OFFSET
        for i in range(self.nl):
            _, _, ny, nx, _ = p[i].shape
            anchors = self.anchors[i].to(device)
            scale = torch.tensor([nx, ny, nx, ny], device=device, dtype=torch.float32)
            t = targets[:, 2:6] * scale  # (nt, 4) xywh in grid units
            # Keep (anchor, target) pairs whose wh ratio is within anchor_t both ways.
            r = t[None, :, 2:4] / anchors[:, None]  # (na, nt, 2)
            keep = torch.max(r, 1 / r).amax(2) < self.anchor_t  # (na, nt)
            a_idx, t_idx = keep.nonzero(as_tuple=True)
            box, img_cls = t[t_idx], targets[t_idx, :2]
            gxy = box[:, :2]
            gxi = torch.tensor([nx, ny], device=device) - gxy  # distance to the far edges
            near_lo = (gxy % 1 < NEIGHBOUR_OFFSET) & (gxy > 1)  # left / upper neighbour exists and is nearer
            near_hi = (gxi % 1 < NEIGHBOUR_OFFSET) & (gxi > 1)  # right / lower neighbour
            use = torch.stack(
                (torch.ones_like(near_lo[:, 0]), near_lo[:, 0], near_lo[:, 1], near_hi[:, 0], near_hi[:, 1])
            )  # (5, m)
            k, m = use.nonzero(as_tuple=True)
            gij = (gxy[m] - steps[k]).long()
            gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
            b, c, a = img_cls[m, 0].long(), img_cls[m, 1].long(), a_idx[m]
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy[m] - torch.stack((gi, gj), 1), box[m, 2:4]), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
