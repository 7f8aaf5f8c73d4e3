"""ImageNet classifier weights, head included, onto a ClassificationModel (models/classifier.py).

    report = load_classifier_weights(model, "convnext_tiny_1k")              # official name (downloaded), or a path:
    report = load_classifier_weights(model, "convnext_tiny_1k_224_ema.pth")  # official, torchvision, timm, .pdparams
    report = load_classifier_weights(model, "conv2former_t.pth.tar")         # official Conv2Former (EMA preferred)
    report = load_classifier_weights(model, "runs/train-cls/exp/weights/best.pt")  # a classifier checkpoint of ours

The backbone goes through the detection loader (models/pretrained.py: read_weights, load_backbone_state, with its
family / size checks), or for our own checkpoints through models.classifier.load_backbone_rows; this module adds the
head. Each format's classifier keys map onto the head row's official names (HEAD_KEYS). The final Linear loads when
the file has the model's class count; otherwise it is drawn afresh (one log line says so) while the rest of the head
(ConvNeXt's LayerNorm, Conv2Former's 1x1 conv + LayerNorm, YOLOv5's Conv) still loads. Head checks run after the
backbone's: a file whose backbone fits but whose head does not is refused with the backbone already copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from models.classifier import ClassificationModel, load_backbone_rows
from models.common import Classify
from models.conv2former_weights import check_source_is_file
from models.pretrained import LoadReport, Weights, load_backbone_state, read_weights
from utils.core.download import normalise_sha256
from utils.core.errors import UserError
from utils.core.log import LOGGER
from utils.core.names import names_dict
from utils.core.parallel import unwrap

_CONVNEXT_HEAD = ("norm.weight", "norm.bias", "head.weight", "head.bias")  # ConvNeXtHead's keys (official names)
_C2F_HEAD = ("head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias", "pred.weight", "pred.bias")
# file format (LoadReport.format) -> {the file's classifier key: the head row's key}
HEAD_KEYS: dict[str, dict[str, str]] = {
    "official": {k: k for k in _CONVNEXT_HEAD},
    "paddle": {k: k for k in _CONVNEXT_HEAD},  # official names; Linear weights are [in, out] (transposed on load)
    "torchvision": dict(
        zip(("classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias"), _CONVNEXT_HEAD)
    ),
    "timm": dict(zip(("head.norm.weight", "head.norm.bias", "head.fc.weight", "head.fc.bias"), _CONVNEXT_HEAD)),
    "Conv2Former official": {k: k for k in _C2F_HEAD},
}


@dataclass
class ClassifierLoadReport:
    """What load_classifier_weights did: the backbone's LoadReport, the head keys loaded and those drawn afresh."""

    backbone: LoadReport
    head: list[str] = field(default_factory=list)  # head-row keys loaded from the file
    reset: list[str] = field(default_factory=list)  # head-row keys re-initialised (another class count, or no head)
    file_classes: int | None = None  # the file's class count (None: the file has no classifier)
    classes: int = 0  # the model's

    def __str__(self) -> str:
        if self.file_classes is None:
            return f"Classifier head: {self.backbone.source} has none — the head keeps its initialisation"
        s = f"Classifier head from {self.backbone.source}: {len(self.head)} tensors loaded"
        if self.reset:
            s += (
                f"; it has {self.file_classes} classes, the model {self.classes}: the final Linear is "
                f"re-initialised ({', '.join(self.reset)})"
            )
        return s


def load_classifier_weights(
    model: nn.Module, source: Any, ema: bool | None = None, sha256: str | None = None
) -> ClassifierLoadReport:
    """Load a whole classifier (backbone and head) onto a ClassificationModel; returns the report, logs it.

    source: a path, a state dict, an official ConvNeXt name (models.pretrained.official_url), or a classifier checkpoint
    of ours; ema / sha256 as for load_backbone_weights. Refused in one line: another family, size, version or kernel
    (naming both), a detection checkpoint, and for the YOLOv5 classifiers anything but our own checkpoints.
    """
    m = unwrap(model)
    if not isinstance(m, ClassificationModel):
        raise UserError(f"{type(m).__name__} is not a classifier — classifier weights load onto a ClassificationModel")
    check_source_is_file(source, m)
    w = read_weights(source, normalise_sha256(sha256, "--pretrained-sha256"), ema)
    if w.record is not None:
        backbone, file_head = _from_record(m, w)
    elif isinstance(m.head, Classify):
        raise UserError(
            f"{w.where}: a {m.yaml.get('yaml_file', 'YOLOv5')} classifier has no ImageNet file format — pass a "
            f"classifier checkpoint of this project, or use a ConvNeXt / Conv2Former model"
        )
    else:
        backbone = load_backbone_state(m, w)
        file_head = _file_head(w, backbone.format)
    report = _load_head(m, file_head, backbone)
    LOGGER.info(str(report))
    if w.record is not None and not report.reset:  # the same classes: their names come along
        m.names = names_dict(w.record.get("names")) or m.names
    return report


def _from_record(m: ClassificationModel, w: Weights) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """A checkpoint of ours: its backbone rows onto the model (family and size checked), and its head row's tensors."""
    rec = w.record
    if rec["yaml"].get("task") != "classify":
        raise UserError(
            f"{w.where} is a detection checkpoint — pass a classifier checkpoint, an ImageNet classifier file or an "
            f"official name (e.g. convnext_tiny_1k)"
        )
    report = LoadReport(source=w.where, format="classifier checkpoint", entry=w.entry)
    report.loaded, report.skipped, report.missing = load_backbone_rows(m, rec, w.where)  # family and size first
    LOGGER.info(str(report))
    theirs, ours = rec["yaml"]["head"][-1][2], m.yaml["head"][-1][2]
    if theirs != ours:  # only custom yamls get here: a backbone of one family with another family's head
        raise UserError(f"{w.where} has a {theirs} head but the model a {ours} — the backbone loaded, the head not")
    prefix = f"model.{len(rec['yaml']['backbone'])}."  # the one head row follows the backbone rows
    head = {k[len(prefix) :]: v for k, v in rec["state_dict"].items() if k.startswith(prefix)}
    return report, head


def _file_head(w: Weights, fmt: str) -> dict[str, torch.Tensor]:
    """An ImageNet file's classifier tensors under the head row's key names ({} when the file has none)."""
    keys = HEAD_KEYS.get(fmt, {})
    out = {ours: w.state[theirs] for theirs, ours in keys.items() if theirs in w.state}
    if fmt == "paddle" and out.get("head.weight") is not None:
        out["head.weight"] = out["head.weight"].t().contiguous()  # paddle.nn.Linear stores [in, out]
    return out


def _load_head(
    m: ClassificationModel, file_head: dict[str, torch.Tensor], backbone: LoadReport
) -> ClassifierLoadReport:
    """Copy the head tensors that fit; the final Linear only with the model's class count, else reset_classifier()."""
    head, where = m.head, backbone.source
    report = ClassifierLoadReport(backbone=backbone, classes=m.nc)
    if not file_head:
        return report
    ours = head.state_dict()  # parameters and buffers (Classify's BatchNorm statistics), sharing their storage
    fc = (f"{head.fc}.weight", f"{head.fc}.bias")
    missing = [k for k in ours if k not in file_head]
    unknown = [k for k in file_head if k not in ours]
    if missing or unknown:
        raise UserError(
            f"{where}: its classifier head does not fit the model's {type(head).__name__} (missing {missing[:3]}, "
            f"unknown {unknown[:3]}) — pass a whole ImageNet classifier of the model's family"
        )
    report.file_classes = int(file_head[fc[0]].shape[0])
    for k, v in file_head.items():
        want = ours[k].shape
        fits = v.shape[1:] == want[1:] if k in fc else v.shape == want  # the class count may differ, nothing else
        if not fits:
            raise UserError(
                f"{where}: classifier key {k} has shape {list(v.shape)} but the model's is {list(want)} — the "
                f"backbone loaded, the head does not fit: pass weights of the model's size"
            )
    same = report.file_classes == m.nc
    with torch.no_grad():
        for k, v in file_head.items():
            if k not in fc or same:
                ours[k].copy_(v)
                report.head.append(k)
    if not same:
        head.reset_classifier()
        report.reset = list(fc)
    return report
