"""Image classifiers: the same backbone rows as detection (ConvNeXt V1/V2, Conv2Former, YOLOv5 CSP) under a classifier
head row, built by models/yolo.parse_model with task "classify".

    model = ClassificationModel("convnext_tiny", nc=10)            # a name (CLASSIFIER_NAMES), a yaml path or a dict
    d = classifier_cfg("conv2former_t", nc=1000)                   # the model dict behind a name
    loaded, skipped, missing = load_backbone_rows(detector, ckpt_record, "best.pt")  # classifier -> detector

A classifier yaml has `task: classify`, `nc`, the family key (`convnext:` / `conv2former:`, or YOLOv5's multiples), the
backbone rows and a head list with one classifier-head row (models/common.py: ConvNeXtHead, Conv2FormerHead, Classify).
The names resolve through the size tables of models/sizes.py, the same ones the detection yamls use.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.conv2former_weights import Conv2FormerShape, copy_tensors
from models.sizes import CONV2FORMER_SIZES, CONVNEXT_SIZES, official_sizes, resolve_conv2former, resolve_convnext
from models.yolo import Model, initialize_weights, load_cfg, parse_model
from utils.core.errors import UserError
from utils.core.files import ROOT, yaml_load
from utils.core.log import LOGGER
from utils.core.names import names_dict
from utils.core.parallel import unwrap

# The names timm and the official repositories use. ConvNeXt V1 has every size of the table but huge (V2 only); V2 has
# its official sizes. YOLOv5's classifiers are its detection backbones: yolov5{n,s,m,l,x}-cls.
CONVNEXT_V1_CLASSIFIERS = tuple(f"convnext_{s}" for s in CONVNEXT_SIZES if s != "huge")
CONVNEXT_V2_CLASSIFIERS = tuple(f"convnextv2_{s}" for s in official_sizes(2))
CONV2FORMER_CLASSIFIERS = tuple(f"conv2former_{s}" for s in CONV2FORMER_SIZES)
YOLOV5_CLASSIFIERS = tuple(f"yolov5{s}-cls" for s in "nsmlx")
CLASSIFIER_NAMES = CONVNEXT_V1_CLASSIFIERS + CONVNEXT_V2_CLASSIFIERS + CONV2FORMER_CLASSIFIERS + YOLOV5_CLASSIFIERS
YOLOV5_CUT = 9  # YOLOv5's classifiers keep detection rows 0..8 and put Classify where row 9 (SPPF) was


def classifier_cfg(name: str, nc: int = 1000, drop_path: float | None = None, dropout: float = 0.0) -> dict[str, Any]:
    """The model dict of a classifier name (CLASSIFIER_NAMES). drop_path: the network-wide rate (None: the size
    table's); dropout: before the final Linear. An unknown name is a one-line UserError listing the valid ones."""
    if name not in CLASSIFIER_NAMES:
        raise UserError(
            f"unknown classifier {name!r} — use a yaml, a checkpoint or one of: {', '.join(CLASSIFIER_NAMES)}"
        )
    d: dict[str, Any] = {"task": "classify", "nc": int(nc)}
    if name.startswith("yolov5"):
        if drop_path is not None:
            raise UserError(f"{name}: YOLOv5's CSP backbone has no drop-path — drop the drop-path setting")
        det = yaml_load(ROOT / "models" / f"{name.removesuffix('-cls')}.yaml")
        d |= {k: det[k] for k in ("depth_multiple", "width_multiple")}
        d["backbone"], head = det["backbone"][:YOLOV5_CUT], "Classify"
    else:
        family, size = name.split("_", 1)
        spec: dict[str, Any] = {"size": size}
        if drop_path is not None:
            spec["drop_path"] = float(drop_path)
        if family == "conv2former":
            d["conv2former"], row, head = spec, "Conv2Former_Block", "Conv2FormerHead"
        else:
            d["convnext"], row, head = (
                {**spec, "version": 2 if family == "convnextv2" else 1},
                "ConvNeXt_Block",
                "ConvNeXtHead",
            )
        d["backbone"] = [[-1, 1, row, [s]] for s in range(4)]
    d["head"] = [[-1, 1, head, ["nc", float(dropout)]]]
    d["yaml_file"] = name  # the name in messages and summaries
    return d


class ClassificationModel(nn.Module):
    """An image classifier built from a classifier name, a yaml path (or bare name under models/) or a dict.

    Attributes as Model's: model (Sequential of rows with .i .f .type .np; the last row is the classifier head), yaml
    (with task: classify), names, nc, stride (the backbone's output stride, tensor([32.]) for every family),
    backbone_rows, save. forward(x (B, ch, H, W)) -> logits (B, nc); features(x) -> the last backbone row's map.
    """

    task = "classify"

    def __init__(self, cfg: str | Path | dict, nc: int | None = None, ch: int = 3, verbose: bool = False) -> None:
        super().__init__()
        if isinstance(cfg, str) and cfg in CLASSIFIER_NAMES:
            cfg = classifier_cfg(cfg, nc=nc if nc is not None else 1000)
        self.yaml, where = load_cfg(cfg)
        self.yaml["task"] = self.task  # a checkpoint record says what it is
        self.yaml["ch"] = self.yaml.get("ch", ch) if ch is None else ch
        if nc is not None and nc != self.yaml.get("nc"):
            if "nc" in self.yaml:
                LOGGER.info(f"Overriding {where} nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = int(nc)
        self.model, self.save, self.backbone_rows = parse_model(
            deepcopy(self.yaml), ch=self.yaml["ch"], where=where, verbose=verbose, task=self.task
        )
        self.nc = int(self.yaml["nc"])
        names = names_dict(self.yaml.get("names"))
        self.names = names if len(names) == self.nc else {i: str(i) for i in range(self.nc)}
        self.stride = self._output_stride()
        initialize_weights(self)  # YOLOv5's BatchNorm settings for its CSP rows and Classify's Conv

    @torch.no_grad()
    def _output_stride(self, s: int = 64) -> torch.Tensor:
        """The backbone's total stride from one dummy forward (64 px: every stride up to 64; meta device too)."""
        p = next(self.parameters())
        self.eval()  # the dummy batch must not touch BatchNorm running statistics
        h = self.features(torch.zeros(1, self.yaml["ch"], s, s, device=p.device, dtype=p.dtype)).shape[-2]
        self.train()
        return torch.tensor([s / h], device="cpu")  # from shapes: a CPU tensor as Model.stride, meta or not

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Every row but the head: the feature map the classifier head pools."""
        y: list[torch.Tensor | None] = []
        for m in self.model[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model[-1](self.features(x))

    @property
    def head(self) -> nn.Module:
        """The classifier-head row (ConvNeXtHead, Conv2FormerHead or Classify)."""
        return self.model[-1]

    def fuse(self) -> ClassificationModel:
        """Fold each Conv's BatchNorm into its conv (YOLOv5 rows, Classify); the same folding as Model.fuse."""
        return Model.fuse(self)

    def info(self, verbose: bool = False, imgsz: int | list[int] = 224) -> tuple[int, int, int, float]:
        """Log and return (layers, parameters, gradients, GFLOPs at imgsz), as Model.info."""
        return Model.info(self, verbose, imgsz)


# --------------------------------------------------------------------------------------- backbone rows between models
def backbone_identity(d: dict[str, Any]) -> str:
    """The family and size of a model dict's backbone, the same for a detector and a classifier of one backbone
    (drop-path and layer-scale init do not count), e.g. 'ConvNeXt-tiny (V1)', 'Conv2Former-t (kernel 11)',
    'YOLOv5 CSP backbone (depth_multiple 0.33, width_multiple 0.5)'."""
    if "convnext" in d:
        s = resolve_convnext(d["convnext"], str(d.get("yaml_file", "model yaml")))
        size = next((n for n, t in CONVNEXT_SIZES.items() if [*t["depths"], *t["dims"]] == s["depths"] + s["dims"]), "")
        shape = f"-{size}" if size else f"(depths={s['depths']}, dims={s['dims']})"
        return f"ConvNeXt{shape} (V{s['version']})"
    if "conv2former" in d:
        s = resolve_conv2former(d["conv2former"], str(d.get("yaml_file", "model yaml")))
        return str(Conv2FormerShape(s["kernel_size"], tuple(s["depths"]), tuple(s["dims"])))
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    return f"YOLOv5 CSP backbone (depth_multiple {gd}, width_multiple {gw})"


def _describe(d: dict[str, Any]) -> str:
    kind = "classifier" if d.get("task") == "classify" else "detector"
    return f"{backbone_identity(d)} {kind}"


def load_backbone_rows(model: nn.Module, record: dict[str, Any], where: str) -> tuple[list[str], list[str], list[str]]:
    """Copy the backbone rows of a model record (a classifier checkpoint's, models/checkpoint.model_record) onto the
    same rows of `model` (a detector, or a classifier of the same backbone); returns (loaded, skipped, missing) keys:
    skipped = the record's head, missing = the model's backbone-row keys the record lacks (YOLOv5's SPPF row 9 when a
    -cls backbone goes into a detector).

    The family and size must match (drop-path may differ) and so must the rows themselves; otherwise one UserError
    line names both backbones, before anything is copied."""
    m = unwrap(model)
    src, dst = record["yaml"], m.yaml
    rows = len(src["backbone"])
    same = backbone_identity(src) == backbone_identity(dst) and len(dst["backbone"]) >= rows
    same = same and [r[2] for r in src["backbone"]] == [r[2] for r in dst["backbone"][:rows]]
    if same and "convnext" not in src and "conv2former" not in src:  # YOLOv5 rows: every argument must agree
        same = src["backbone"] == dst["backbone"][:rows]
    ours = {k: v for k, v in m.state_dict().items() if _row_of(k) < rows}
    theirs = {k: v for k, v in record["state_dict"].items() if _row_of(k) < rows}
    same = same and all(k in ours and ours[k].shape == v.shape for k, v in theirs.items())
    if not same:
        raise UserError(
            f"{where} holds a {_describe(src)} but the model is a {_describe(dst)} — its backbone goes only into a "
            f"model of the same family and size"
        )
    skipped = [k for k in record["state_dict"] if k not in theirs]
    return copy_tensors(ours, theirs), skipped, [k for k in ours if k not in theirs]


def _row_of(key: str) -> int:
    """The row index of a state-dict key 'model.<row>.<...>' (a large number for anything else)."""
    parts = key.split(".", 2)
    return int(parts[1]) if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit() else 1 << 30
