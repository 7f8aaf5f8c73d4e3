"""Non-maximum suppression for YOLO predictions, built on torchvision.ops.batched_nms."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from utils.core.boxes import xywh2xyxy
from utils.core.errors import UserError
from utils.core.log import LOGGER

MAX_NMS = 30000  # candidate cap: boxes beyond this (sorted by score) never reach NMS, bounding its O(n²) cost


def _check_thresholds(conf_thres: float, iou_thres: float, max_det: int) -> None:
    """Bad thresholds are user input (CLI flags), so they get a clear message rather than an assert."""
    if not 0 <= conf_thres <= 1:
        raise UserError(f"--conf-thres {conf_thres} is outside 0..1 — pick a value like 0.25 (or 0.001 for mAP)")
    if not 0 <= iou_thres <= 1:
        raise UserError(f"--iou-thres {iou_thres} is outside 0..1 — pick a value like 0.45")
    if max_det < 1:
        raise UserError(f"--max-det {max_det} must be at least 1")


def _candidates(x: torch.Tensor, conf_thres: float, multi_label: bool, classes: Sequence[int] | None) -> torch.Tensor:
    """(N, 5+nc) decoded rows whose obj already passed -> (n, 6) [x1 y1 x2 y2 score cls], score = obj × cls."""
    scores = x[:, 5:] * x[:, 4:5]
    box = xywh2xyxy(x[:, :4])
    if multi_label:  # one row per (box, class) pair above the threshold
        i, j = (scores > conf_thres).nonzero(as_tuple=False).T
        out = torch.cat((box[i], scores[i, j, None], j[:, None].to(box.dtype)), 1)
    else:  # best class only
        conf, j = scores.max(1, keepdim=True)
        out = torch.cat((box, conf, j.to(box.dtype)), 1)[conf.view(-1) > conf_thres]
    if classes is not None:
        out = out[(out[:, 5:6] == torch.tensor(list(classes), device=out.device, dtype=out.dtype)).any(1)]
    return out


def _with_labels(x: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """Append a-priori labels (n, 5) [cls, cx, cy, w, h] in pixels as perfect predictions (auto-labelling)."""
    if lb is None or not len(lb):
        return x
    v = torch.zeros((len(lb), x.shape[1]), device=x.device, dtype=x.dtype)
    v[:, :4] = lb[:, 1:5]
    v[:, 4] = 1.0
    v[torch.arange(len(lb)), lb[:, 0].long() + 5] = 1.0
    return torch.cat((x, v), 0)


def non_max_suppression(
    prediction: torch.Tensor | tuple | list,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    labels: Sequence[torch.Tensor] = (),
    max_det: int = 300,
) -> list[torch.Tensor]:
    """NMS on decoded predictions (B, N, 5+nc) [cx cy w h obj cls...] -> per image a (n, 6) tensor
    [x1 y1 x2 y2 conf cls], highest confidence first, at most max_det rows.

    A box is a candidate when obj > conf_thres and obj × cls > conf_thres. classes keeps only those class ids;
    agnostic suppresses across classes; multi_label lets one box yield several (box, class) rows.
    A time guard stops early (with a warning) so a pathological untrained model cannot stall validation.
    """
    if isinstance(prediction, (list, tuple)):  # eval forward returns (pred, raw_outputs)
        prediction = prediction[0]
    _check_thresholds(conf_thres, iou_thres, max_det)
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    multi_label &= nc > 1  # with one class there is nothing to add
    time_limit = 0.5 + 0.05 * bs  # seconds
    t0 = time.time()
    output = [torch.zeros((0, 6), device=prediction.device, dtype=prediction.dtype)] * bs
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]
        if labels and xi < len(labels):
            x = _with_labels(x, labels[xi])
        if not x.shape[0]:
            continue
        x = _candidates(x, conf_thres, multi_label, classes)
        if not x.shape[0]:
            continue
        if x.shape[0] > MAX_NMS:
            x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]
        idxs = torch.zeros_like(x[:, 5]) if agnostic else x[:, 5]
        # float32 for NMS: torchvision's CPU kernel has no half implementation
        keep = batched_nms(x[:, :4].float(), x[:, 4].float(), idxs, iou_thres)[:max_det]
        output[xi] = x[keep]
        if time.time() - t0 > time_limit:
            LOGGER.warning(
                f"WARNING ⚠️ NMS time limit {time_limit:.3f}s exceeded after {xi + 1}/{bs} images "
                f"(too many candidate boxes — an untrained model or a very low --conf-thres)"
            )
            break
    return output
