"""YOLOv5 model builder: Detect head, Model (yaml path or dict), parse_model. Run directly to print the layer table.

Usage:
    python -m models.yolo --cfg models/yolov5_ConvNeXt.yaml
"""

from __future__ import annotations

import argparse
import math
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.flop_counter import FlopCounterMode

from models.common import (
    C3,
    SPPF,
    Bottleneck,
    Classify,
    Concat,
    Conv,
    Conv2Former_Block,
    Conv2FormerHead,
    ConvNeXt_Block,
    ConvNeXtHead,
    DWConv,
)
from models.sizes import STAGE_MODULES, resolve_conv2former, resolve_convnext
from utils.core.device import select_device
from utils.core.errors import UserError, cli_main
from utils.core.files import ROOT, yaml_load
from utils.core.log import LOGGER, colorstr
from utils.core.names import names_dict


class Detect(nn.Module):
    """YOLOv5 head: one 1x1 conv per level giving na * (5 + nc) channels.

    `anchors` is a (nl, na, 2) buffer in grid units (pixels / stride) once Model has found the strides.
    Training forward -> list of raw (B, na, ny, nx, 5 + nc). Eval forward -> (pred (B, N, 5 + nc) with xywh in input
    pixels and sigmoid obj / cls, raw list); with `export = True` only pred.
    """

    export = False  # set by exporters: eval forward returns pred only
    dynamic = False  # set by exporters: rebuild grids from the input shape on every call (no cache)

    def __init__(self, nc: int = 80, anchors: Any = (), ch: tuple[int, ...] | list[int] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        # Strides are unknown until Model's dummy forward; non-persistent so state dicts stay as YOLOv5's.
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.strides_known = False
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x: list[torch.Tensor]) -> Any:
        raw = []
        for i in range(self.nl):
            bs, _, ny, nx = x[i].shape
            raw.append(self.m[i](x[i]).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training or not self.strides_known:  # Model's stride-finding forward: raw only
            return raw
        pred = torch.cat([self._decode(r, i) for i, r in enumerate(raw)], 1)
        return pred if self.export else (pred, raw)

    def _decode(self, r: torch.Tensor, i: int) -> torch.Tensor:
        """Raw level output -> (B, na*ny*nx, no): xy = (2σ - 0.5 + cell) * stride, wh = (2σ)² * anchor pixels."""
        bs, _, ny, nx, _ = r.shape
        grid, anchor_grid = self._grid(nx, ny, i, r)
        xy, wh, conf = r.sigmoid().split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + grid) * self.stride[i]
        wh = (wh * 2) ** 2 * anchor_grid
        return torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no)

    def _grid(self, nx: int, ny: int, i: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (i, nx, ny, like.device, like.dtype)
        if key not in self._grids or self.dynamic or torch.jit.is_tracing():
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=like.device, dtype=like.dtype),
                torch.arange(nx, device=like.device, dtype=like.dtype),
                indexing="ij",
            )
            grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2) - 0.5  # cell offset folds the -0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).to(like.dtype).view(1, self.na, 1, 1, 2)
            self._grids[key] = (grid, anchor_grid.expand(1, self.na, ny, nx, 2))
        return self._grids[key]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> nn.Module:
        self._grids = {}  # cached grids follow device / dtype changes lazily
        return super()._apply(fn, *args, **kwargs)


def check_anchor_order(detect: Detect) -> bool:
    """Make anchor areas grow with stride (flip the levels if they are reversed); True when it flipped.

    Works on the stored grid-unit anchors: the comparison and the flip are done in pixels (anchor * stride).
    Lives next to Detect because it rewrites Detect's anchors and clears its grid cache.
    """
    stride = detect.stride.to(detect.anchors.device).view(-1, 1, 1)
    pixels = detect.anchors * stride
    a = pixels.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], stride.view(-1)[-1] - stride.view(-1)[0]
    if bool(da != 0) and bool(da.sign() != ds.sign()):
        LOGGER.info(f"{colorstr('AutoAnchor: ')}Reversing anchor order")
        with torch.no_grad():
            detect.anchors[:] = pixels.flip(0) / stride
        detect._grids = {}
        return True
    return False


MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "DWConv": DWConv,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "SPPF": SPPF,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
    "Detect": Detect,
    "ConvNeXt_Block": ConvNeXt_Block,
    "Conv2Former_Block": Conv2Former_Block,
    "ConvNeXtHead": ConvNeXtHead,
    "Conv2FormerHead": Conv2FormerHead,
    "Classify": Classify,
}
CLASSIFIER_HEADS = (ConvNeXtHead, Conv2FormerHead, Classify)  # the last row of a classifier (task: classify)
# backbone stage module -> (its top-level yaml key, an example size) — the key holds depths / dims for its rows
_STAGE_KEYS: dict[type[nn.Module], tuple[str, str]] = {
    ConvNeXt_Block: ("convnext", "tiny"),
    Conv2Former_Block: ("conv2former", "t"),
}
_CHANNEL_MODULES = (Conv, DWConv, Bottleneck, C3, SPPF)  # args[0] is c2; width multiple applies
_REPEAT_MODULES = (C3,)  # n is passed as the third constructor argument


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of divisor >= x."""
    return int(math.ceil(x / divisor) * divisor)


class _RowError:
    """Builds one-line UserErrors that name the yaml file and the row."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, i: int, row: Any, msg: str) -> UserError:
        return UserError(f"{self.where} row {i} {row!r}: {msg}")


def _check_from(f: Any, i: int, row: Any, err: _RowError) -> list[int]:
    """Absolute source indices of a row's `from`; -k is relative, forward / self references are refused."""
    fs = f if isinstance(f, list) else [f]
    if not fs or not all(isinstance(j, int) and not isinstance(j, bool) for j in fs):
        raise err(i, row, "'from' must be an int or a list of ints — e.g. -1 or [-1, 6]")
    out = []
    for j in fs:
        a = i + j if j < 0 else j
        if a >= i:
            raise err(i, row, f"'from' {j} points forward (row {a}) — a row can only take earlier rows")
        if a < -1:
            raise err(i, row, f"'from' {j} points before the input — use -1 or an earlier row index")
        out.append(a)
    return out


def _resolve_args(args: list, d: dict) -> list:
    """yaml names -> values: 'nc' and 'anchors' from the yaml, 'None' -> None; other strings stay (e.g. 'nearest')."""
    table = {"nc": d["nc"], "anchors": d.get("anchors"), "None": None}  # classifiers have no anchors
    return [table.get(a, a) if isinstance(a, str) else a for a in args]


def _stage_args(
    m: type, args: list, c1: int, spec: dict | None, stages_seen: int, i: int, row: Any, err: _RowError
) -> tuple[list, int]:
    """Constructor args and output channels for a backbone stage row [from, 1, ConvNeXt_Block, [stage]] (or
    Conv2Former_Block); depths / dims / ... come from the family's resolved yaml key `spec`."""
    name, (key, example) = m.__name__, _STAGE_KEYS[m]
    if spec is None:
        raise err(i, row, f"{name} needs a top-level '{key}:' key (e.g. '{key}: {example}') in the yaml")
    if len(args) != 1 or not isinstance(args[0], int) or not 0 <= args[0] <= 3:
        raise err(i, row, f"{name} args must be [stage] with stage 0..3 — e.g. [-1, 1, {name}, [0]]")
    stage = args[0]
    if stage != stages_seen:
        raise err(i, row, f"{name.split('_')[0]} stage {stage} out of order — expected stage {stages_seen} here")
    if stage > 0 and c1 != spec["dims"][stage - 1]:
        raise err(
            i,
            row,
            f"stage {stage} input has {c1} channels, expected dims[{stage - 1}]="
            f"{spec['dims'][stage - 1]} — take 'from' the previous stage",
        )
    shape, c2 = [c1, stage, spec["depths"], spec["dims"]], spec["dims"][stage]
    if m is Conv2Former_Block:
        return [*shape, spec["kernel_size"], spec["drop_path"], spec["layer_scale_init"], spec["mlp_ratio"]], c2
    return [*shape, spec["drop_path"], spec["layer_scale_init"], spec["version"]], c2


def _backbone_specs(d: dict, where: str) -> dict[type[nn.Module], dict | None]:
    """The resolved `convnext:` / `conv2former:` keys by stage module (None when absent); one family per yaml."""
    if "convnext" in d and "conv2former" in d:
        raise UserError(f"{where}: both 'convnext' and 'conv2former' keys — a model yaml has one backbone family")
    return {
        ConvNeXt_Block: resolve_convnext(d["convnext"], where) if "convnext" in d else None,
        Conv2Former_Block: resolve_conv2former(d["conv2former"], where) if "conv2former" in d else None,
    }


def parse_model(
    d: dict, ch: int, where: str = "model yaml", verbose: bool = True, task: str = "detect"
) -> tuple[nn.Sequential, list[int], int]:
    """Build layers from a model dict; returns (Sequential, save list, number of backbone rows).

    task "detect" (Model): the last row is Detect and `anchors` is required. task "classify" (models/classifier.py
    ClassificationModel): the last row is a classifier head (CLASSIFIER_HEADS) and there are no anchors."""
    err = _RowError(where)
    if d.get("task", task) != task:  # e.g. a classifier checkpoint's yaml handed to the detection Model
        builder = "models.classifier.ClassificationModel" if d["task"] == "classify" else "models.yolo.Model"
        raise UserError(
            f"{where}: a '{d['task']}' model (yaml task: {d['task']}) cannot be built as '{task}' — use {builder}"
        )
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise UserError(f"{where}: missing or empty '{key}' section — a model yaml needs backbone and head lists")
    detect = task == "detect"
    if "nc" not in d or (detect and "anchors" not in d):
        raise UserError(f"{where}: missing '{'nc' if 'nc' not in d else 'anchors'}' — add it at the top level")
    gd, gw = float(d.get("depth_multiple", 1.0)), float(d.get("width_multiple", 1.0))
    specs = _backbone_specs(d, where)
    no = None  # Detect's output channels (a conv row with exactly that many channels is not width-scaled)
    if detect:
        na = len(d["anchors"][0]) // 2 if isinstance(d["anchors"], list) else int(d["anchors"])
        no = na * (d["nc"] + 5)
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save, chs, stages_seen = [], [], [], 0
    for i, row in enumerate(d["backbone"] + d["head"]):
        if not isinstance(row, list) or len(row) != 4:
            raise err(i, row, "each row must be [from, number, module, args]")
        f, n, name, args = row
        if name not in MODULES:
            raise err(i, row, f"unknown module {name!r} — known: {', '.join(MODULES)}")
        if not isinstance(n, int) or n < 1 or not isinstance(args, list):
            raise err(i, row, "number must be a positive int and args a list")
        src = _check_from(f, i, row, err)
        cin = [chs[j] if j >= 0 else ch for j in src]
        m, args = MODULES[name], _resolve_args(args, d)
        n_ = max(round(n * gd), 1) if n > 1 else n
        if m in STAGE_MODULES:
            if n != 1:
                raise err(i, row, f"{name} number must be 1 (depths come from the '{_STAGE_KEYS[m][0]}' key)")
            args, c2 = _stage_args(m, args, cin[0], specs[m], stages_seen, i, row, err)
            stages_seen += 1
        else:
            args, c2 = _head_args(m, args, cin, n_, gw, no, i, row, err)
        copies = 1 if m in _REPEAT_MODULES or m is Detect or m in STAGE_MODULES else n_
        m_ = (
            nn.Sequential(*(_build(m, args, i, row, err) for _ in range(copies)))
            if copies > 1
            else _build(m, args, i, row, err)
        )
        m_.i, m_.f, m_.type, m_.np = i, f, name, sum(p.numel() for p in m_.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{m_.np:10.0f}  {name:<40}{_short_args(m, args)!s:<30}")
        save.extend(a for j, a in zip(f if isinstance(f, list) else [f], src) if j != -1 and a >= 0)
        layers.append(m_)
        chs.append(c2)
    if detect and not isinstance(layers[-1], Detect):
        raise err(len(layers) - 1, d["head"][-1], "the last head row must be Detect")
    if not detect and not isinstance(layers[-1], CLASSIFIER_HEADS):
        heads = ", ".join(h.__name__ for h in CLASSIFIER_HEADS)
        raise err(len(layers) - 1, d["head"][-1], f"the last head row of a classifier must be one of {heads}")
    return nn.Sequential(*layers), sorted(set(save)), len(d["backbone"])


def _head_args(
    m: type, args: list, cin: list[int], n_: int, gw: float, no: int | None, i: int, row: Any, err: _RowError
) -> tuple[list, int]:
    """Constructor args and output channels for YOLOv5 rows (width multiple on c2, C3 repeats inserted) and
    classifier heads ([nc] or [nc, dropout]: the class count is never width-scaled)."""
    if m in CLASSIFIER_HEADS:
        if not args or not isinstance(args[0], int) or isinstance(args[0], bool) or args[0] < 1:
            raise err(i, row, f"{m.__name__} args must be [nc] or [nc, dropout] — e.g. [-1, 1, {m.__name__}, [nc]]")
        return [cin[0], *args], args[0]
    if m in _CHANNEL_MODULES:
        if not args or not isinstance(args[0], int):
            raise err(i, row, "first arg must be the output channel count (an int)")
        c2 = make_divisible(args[0] * gw, 8) if args[0] != no else args[0]
        args = [cin[0], c2, *args[1:]]
        if m in _REPEAT_MODULES:
            args.insert(2, n_)
        return args, c2
    if m is Concat:
        return args, sum(cin)
    if m is Detect:
        if len(args) < 2:
            raise err(i, row, "Detect args must be [nc, anchors]")
        anchors = args[1]
        if isinstance(anchors, int):  # anchor count only: zero anchors for AutoAnchor to fill in
            anchors = [[0.0] * (anchors * 2)] * len(cin)
        if not isinstance(anchors, list) or len(anchors) != len(cin):
            raise err(
                i,
                row,
                f"Detect takes {len(cin)} inputs but anchors has "
                f"{len(anchors) if isinstance(anchors, list) else anchors!r} levels",
            )
        return [args[0], anchors, cin], no
    return args, cin[0]  # Upsample and other shape-preserving layers


def _build(m: type, args: list, i: int, row: Any, err: _RowError) -> nn.Module:
    try:
        return m(*args)
    except (TypeError, ValueError) as e:
        raise err(i, row, f"cannot build {m.__name__}: {e}") from None


def _short_args(m: type, args: list) -> list:
    if m is ConvNeXt_Block:  # [c1, stage, depths, dims, ...] -> [c1, stage, dim, depth, version]
        return [args[0], args[1], args[3][args[1]], args[2][args[1]], f"v{args[6]}"]
    if m is Conv2Former_Block:  # [c1, stage, depths, dims, kernel, ...] -> [c1, stage, dim, depth, kernel]
        return [args[0], args[1], args[3][args[1]], args[2][args[1]], f"k{args[4]}"]
    if m is Detect:
        return [args[0], f"{len(args[1])}x{len(args[1][0]) // 2} anchors", args[2]]
    return args


def find_cfg(cfg: str | Path, flag: str = "") -> Path:
    """The model yaml file for a path, or for a bare name (or any path's file name) under models/.

    The one lookup of model yamls (Model and train's --cfg check both use it); a miss is a UserError that lists the
    yamls under models/, prefixed with the flag (e.g. '--cfg') when one is given."""
    path = Path(cfg)
    if path.is_file():
        return path
    if (ROOT / "models" / path.name).is_file():
        return ROOT / "models" / path.name
    found = ", ".join(sorted(p.name for p in (ROOT / "models").glob("*.yaml")))
    where = f"{flag} {cfg}" if flag else str(cfg)
    raise UserError(f"{where}: model yaml not found — pass a path or one of models/: {found}")


def load_cfg(cfg: str | Path | dict) -> tuple[dict, str]:
    """A model dict and a name for messages from a yaml path, a bare name under models/, or a dict."""
    if isinstance(cfg, dict):
        return deepcopy(cfg), str(cfg.get("yaml_file", "model dict"))
    path = find_cfg(cfg)
    d = yaml_load(path)
    if not isinstance(d, dict):
        raise UserError(f"{path}: a model yaml must be a mapping with nc, anchors, backbone and head")
    d["yaml_file"] = str(path.name)
    return d, str(path)


class Model(nn.Module):
    """YOLOv5 detection model built from a yaml path (or bare name under models/) or a dict.

    verbose=True logs the YOLOv5 layer table while building.
    Attributes: model (Sequential of rows with .i .f .type .np), yaml, names, nc, stride, backbone_rows, save.
    """

    def __init__(
        self,
        cfg: str | Path | dict = "yolov5s.yaml",
        ch: int = 3,
        nc: int | None = None,
        anchors: Any = None,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        self.yaml, where = load_cfg(cfg)
        self.yaml["ch"] = self.yaml.get("ch", ch) if ch is None else ch
        if nc is not None and nc != self.yaml.get("nc"):
            if "nc" in self.yaml:
                LOGGER.info(f"Overriding {where} nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = int(nc)
        if anchors is not None:
            LOGGER.info(f"Overriding {where} anchors with anchors={anchors}")
            self.yaml["anchors"] = round(anchors) if isinstance(anchors, (int, float)) else anchors
        self.model, self.save, self.backbone_rows = parse_model(
            deepcopy(self.yaml), ch=self.yaml["ch"], where=where, verbose=verbose
        )
        self.nc = int(self.yaml["nc"])
        names = names_dict(self.yaml.get("names"))
        self.names = names if len(names) == self.nc else {i: str(i) for i in range(self.nc)}
        self._init_strides_and_anchors()
        self._initialize_biases()
        initialize_weights(self)

    @torch.no_grad()
    def _init_strides_and_anchors(self, s: int = 256) -> None:
        """Find strides with one dummy forward, then store anchors in grid units (pixels / stride)."""
        m: Detect = self.model[-1]
        p = next(self.parameters())
        self.eval()  # eval: the dummy batch must not touch BatchNorm running stats (Detect still returns raw)
        raw = self._forward_once(torch.zeros(1, self.yaml["ch"], s, s, device=p.device, dtype=p.dtype))
        self.train()
        strides = torch.tensor([s / x.shape[-3] for x in raw], device="cpu")  # from shapes: fine on meta too
        m.stride.copy_(strides)
        m.anchors /= m.stride.view(-1, 1, 1)
        if m.nl > 1 and m.anchors.device.type != "meta":
            check_anchor_order(m)  # anchor areas must grow with stride: a yaml listing them largest-first is flipped
        m.strides_known = True
        self.stride = strides

    @torch.no_grad()
    def _initialize_biases(self) -> None:
        """YOLOv5 prior: ~8 objects per 640 image per level, class prior 0.6 / nc."""
        m: Detect = self.model[-1]
        for mi, s in zip(m.m, self.stride.tolist()):
            b = mi.bias.view(m.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5 : 5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))

    def forward(self, x: torch.Tensor) -> Any:
        """Training: list of raw level outputs. Eval: (pred, raw). TTA: utils.inference.api.tta_forward."""
        return self._forward_once(x)

    def _forward_once(self, x: torch.Tensor) -> Any:
        y: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def fuse(self) -> Model:
        """Fold each Conv's BatchNorm into its conv weights (inference only); returns self."""
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
                m.conv.eval(), m.bn.eval()
                m.conv = fuse_conv_bn_eval(m.conv, m.bn)
                m.bn = nn.Identity()
        for m in self.model:
            m.np = sum(p.numel() for p in m.parameters())
        self.info()
        return self

    def info(self, verbose: bool = False, imgsz: int | list[int] = 640) -> tuple[int, int, int, float]:
        """Log and return (layers, parameters, gradients, GFLOPs at imgsz)."""
        n_p = sum(p.numel() for p in self.parameters())
        n_g = sum(p.numel() for p in self.parameters() if p.requires_grad)
        layers = len(list(self.modules()))
        if verbose:
            LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20}")
            for i, (name, p) in enumerate(self.named_parameters()):
                LOGGER.info(f"{i:5g} {name:>40} {p.requires_grad!s:>9} {p.numel():12g} {list(p.shape)!s:>20}")
        gflops = model_gflops(self, imgsz)
        name = Path(str(self.yaml.get("yaml_file", "Model"))).stem
        LOGGER.info(f"{name} summary: {layers} layers, {n_p} parameters, {n_g} gradients, {gflops:.1f} GFLOPs")
        return layers, n_p, n_g, gflops


def model_gflops(model: Model, imgsz: int | list[int] = 640) -> float:
    """GFLOPs (2 x multiply-adds, torch.utils.flop_counter) of one forward at imgsz.

    Measured at a small size and scaled by area: conv / matmul FLOPs are exactly proportional to the image area
    while every level's size divides evenly, and the small forward keeps info() cheap for the huge backbones.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    s = 2 * max(int(model.stride.max()), 32)
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, model.yaml["ch"], s, s, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9 * (h / s) * (w / s)


def initialize_weights(model: nn.Module) -> None:
    """YOLOv5 BatchNorm settings (eps 1e-3, momentum 0.03) and in-place activations.

    The Conv2Former stem's BatchNorms keep PyTorch's defaults (eps 1e-5, as in the official model): its ImageNet
    running statistics are only exact with the eps they were trained with."""
    keep = {id(b) for st in model.modules() if isinstance(st, Conv2Former_Block) for b in st.modules()}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and id(m) not in keep:
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a model from a yaml and print its layer table and summary")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model yaml (path or name under models/)")
    parser.add_argument("--nc", type=int, default=None, help="override the yaml's number of classes")
    parser.add_argument("--imgsz", type=int, default=640, help="image size for the GFLOPs figure")
    parser.add_argument("--device", default="cpu", help="cpu or cuda device, i.e. 0")
    parser.add_argument("--verbose", action="store_true", help="also list every parameter")
    return parser.parse_args(argv)


def run(
    cfg: str | Path | dict = "yolov5s.yaml",
    nc: int | None = None,
    imgsz: int = 640,
    device: str = "cpu",
    verbose: bool = False,
) -> dict[str, Any]:
    """Build the model, print the layer table and summary; returns {'model', 'layers', 'params', 'gflops'}."""
    model = Model(cfg, nc=nc, verbose=True).to(select_device(device))
    layers, n_p, _, gflops = model.info(verbose=verbose, imgsz=imgsz)
    return {"model": model, "layers": layers, "params": n_p, "gflops": gflops}


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
