"""Classifiers (models/classifier.py, the heads of models/common.py, models/classifier_weights.py): every name builds
with the official classifier's parameter count; official, torchvision, timm, Paddle and Conv2Former files load head
included, with logits equal to a float64 reference written here from the equations (BRIEF §2, §5); another class count
re-initialises the final Linear only; classifier checkpoints round-trip and give their backbone to the matching
detector (--backbone-weights), other sizes and families refused in one line."""

from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.checkpoint import (
    load_checkpoint,
    load_checkpoint_model,
    model_from_record,
    model_record,
    new_checkpoint,
    save_checkpoint,
)
from models.classifier import CLASSIFIER_NAMES, ClassificationModel, classifier_cfg
from models.classifier_weights import load_classifier_weights
from models.common import Classify
from models.pretrained import load_backbone_weights
from models.yolo import Model
from tests.fixtures_models import micro_c2f_cfg, micro_cfg
from tests.reference_conv2former import (
    classifier_shapes,
    ln_channels_first,
    official_shapes,
    random_official_state,
    reference_stages,
)
from utils.core.errors import UserError

# Published parameter counts of the official classifiers, 1000 classes (BRIEF §2, §5, §7)
PUBLISHED = {
    "convnext_atto": 3_695_520,
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnextv2_atto": 3_708_400,
    "convnextv2_nano": 15_623_800,
    "convnextv2_tiny": 28_635_496,
    "conv2former_n": 14_992_840,
    "conv2former_t": 26_697_204,
    "conv2former_s": 50_032_692,
    "conv2former_b": 90_029_112,
    "conv2former_b_22k": 88_784_952,
    "conv2former_l": 198_893_736,
}
# ConvNeXt depths / dims by size (BRIEF §2's table), for counting the sizes without a published figure
CONVNEXT = {
    "atto": ([2, 2, 6, 2], [40, 80, 160, 320]),
    "femto": ([2, 2, 6, 2], [48, 96, 192, 384]),
    "pico": ([2, 2, 6, 2], [64, 128, 256, 512]),
    "nano": ([2, 2, 8, 2], [80, 160, 320, 640]),
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
    "huge": ([3, 3, 27, 3], [352, 704, 1408, 2816]),
}
MICRO = {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]}  # tests/fixtures_models.MICRO_CFG's backbone
C2F_MICRO = {"kernel_size": 3, **MICRO}


def convnext_count(depths: list[int], dims: list[int], version: int, nc: int = 1000) -> int:
    """Parameters of a ConvNeXt classifier from the architecture alone: stem (4x4 conv + LN), downsamples (LN + 2x2
    conv), blocks (7x7 dw conv, LN, d->4d->d, layer scale d or GRN 2 x 4d), head (LN + Linear)."""
    n = 3 * 16 * dims[0] + dims[0] + 2 * dims[0]
    for s in (1, 2, 3):
        n += 2 * dims[s - 1] + 4 * dims[s - 1] * dims[s] + dims[s]
    for depth, d in zip(depths, dims):
        per_block = 49 * d + d + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d) + (d if version == 1 else 8 * d)
        n += depth * per_block
    return n + 2 * dims[3] + dims[3] * nc + nc


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str) -> ClassificationModel:
    with torch.device("meta"):  # shapes only: the biggest sizes cost no memory and no init
        return ClassificationModel(name)


# ---------------------------------------------------------------------------------------------------- sizes
def test_count_formula_reproduces_the_published_convnext_counts() -> None:
    for name, n in PUBLISHED.items():
        if name.startswith("convnext"):
            size, version = name.split("_")[1], 2 if name.startswith("convnextv2") else 1
            assert convnext_count(*CONVNEXT[size], version) == n, name


@pytest.mark.parametrize("name", [n for n in CLASSIFIER_NAMES if not n.startswith("yolov5")])
def test_every_name_has_the_official_parameter_count(name: str) -> None:
    model = build_meta(name)
    if name in PUBLISHED:
        want = PUBLISHED[name]
    else:  # a ConvNeXt size without a published figure: the formula checked above
        size, version = name.split("_")[1], 2 if name.startswith("convnextv2") else 1
        want = convnext_count(*CONVNEXT[size], version)
    assert count(model) == want
    assert model.task == model.yaml["task"] == "classify" and model.nc == 1000 and model.backbone_rows == 4
    assert model.stride.tolist() == [32.0]


@pytest.mark.parametrize("size", list("nsmlx"))
def test_yolov5_cls_is_the_detection_backbone_cut_before_sppf(size: str) -> None:
    """yolov5{size}-cls = detection rows 0..8 (same parameters) + Classify(1024 x width -> 1280 -> 1000)."""
    model = build_meta(f"yolov5{size}-cls")
    with torch.device("meta"):
        det = Model(f"yolov5{size}.yaml")
    rows = {k: v.shape for k, v in det.state_dict().items() if int(k.split(".")[1]) < 9}
    assert {k: v.shape for k, v in model.state_dict().items() if int(k.split(".")[1]) < 9} == rows
    head = model.model[-1]
    c1 = round(1024 * det.yaml["width_multiple"] / 8) * 8
    assert isinstance(head, Classify) and model.backbone_rows == 9 and head.i == 9
    assert head.conv.conv.weight.shape == (1280, c1, 1, 1) and head.linear.weight.shape == (1000, 1280)
    assert count(model) == sum(count(r) for r in det.model[:9]) + c1 * 1280 + 2 * 1280 + 1280 * 1000 + 1000


def test_yolov5_cls_forward_gives_logits() -> None:
    model = ClassificationModel("yolov5n-cls", nc=7).eval()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_name_and_bad_yamls_are_one_line() -> None:
    with pytest.raises(UserError, match="unknown classifier 'convnext_tiniest'.*convnext_atto, .*yolov5x-cls"):
        classifier_cfg("convnext_tiniest")
    with pytest.raises(UserError, match=r"row 18 .*last head row of a classifier must be one of ConvNeXtHead"):
        ClassificationModel(micro_cfg())  # a detection yaml: Detect last
    with pytest.raises(UserError, match="'classify' model .* use models.classifier.ClassificationModel"):
        Model(classifier_cfg("convnext_atto"))
    with pytest.raises(UserError, match=r"ConvNeXtHead args must be \[nc\] or \[nc, dropout\]"):
        ClassificationModel({**classifier_cfg("convnext_atto"), "head": [[-1, 1, "ConvNeXtHead", ["ten"]]]})
    with pytest.raises(UserError, match="no drop-path"):
        classifier_cfg("yolov5s-cls", drop_path=0.1)


def test_drop_path_and_dropout_are_configurable() -> None:
    model = build_meta("convnext_atto")
    assert model.model[3].blocks[-1].drop_path.p == 0.0 and model.head.drop.p == 0.0
    with torch.device("meta"):
        model = ClassificationModel(classifier_cfg("convnext_atto", drop_path=0.2, dropout=0.3))
    assert model.model[3].blocks[-1].drop_path.p == pytest.approx(0.2) and model.head.drop.p == 0.3


# ------------------------------------------------------------------------------------------ ConvNeXt references
def convnext_official(depths: list[int], dims: list[int], version: int, nc: int, seed: int = 0) -> dict:
    """Random non-trivial weights in the facebookresearch layout, classifier included: layer scales and norm gains
    0.5..1.5, GRN gamma / beta far from 0, biases ~0.2, conv / Linear weights ~1/sqrt(fan-in)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> torch.Tensor:
        fan_in = int(np.prod(shape[1:]))
        return torch.randn(shape, generator=g) / fan_in**0.5

    def b(n: int) -> torch.Tensor:
        return torch.randn(n, generator=g) * 0.2

    def gain(n: int) -> torch.Tensor:
        return torch.rand(n, generator=g) + 0.5

    sd = {"downsample_layers.0.0.weight": w(dims[0], 3, 4, 4), "downsample_layers.0.0.bias": b(dims[0])}
    sd |= {"downsample_layers.0.1.weight": gain(dims[0]), "downsample_layers.0.1.bias": b(dims[0])}
    for s in (1, 2, 3):
        p = f"downsample_layers.{s}."
        sd |= {p + "0.weight": gain(dims[s - 1]), p + "0.bias": b(dims[s - 1])}
        sd |= {p + "1.weight": w(dims[s], dims[s - 1], 2, 2), p + "1.bias": b(dims[s])}
    for s, (depth, d) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f"stages.{s}.{j}."
            sd |= {p + "dwconv.weight": w(d, 1, 7, 7), p + "dwconv.bias": b(d)}
            sd |= {p + "norm.weight": gain(d), p + "norm.bias": b(d)}
            sd |= {p + "pwconv1.weight": w(4 * d, d), p + "pwconv1.bias": b(4 * d)}
            sd |= {p + "pwconv2.weight": w(d, 4 * d), p + "pwconv2.bias": b(d)}
            if version == 1:
                sd[p + "gamma"] = gain(d)
            else:
                sd[p + "grn.gamma"] = gain(4 * d).view(1, 1, 1, -1)
                sd[p + "grn.beta"] = b(4 * d).view(1, 1, 1, -1)
    sd |= {"norm.weight": gain(dims[3]), "norm.bias": b(dims[3]), "head.weight": w(nc, dims[3]), "head.bias": b(nc)}
    return sd


def layer_norm(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """LayerNorm over `dim` by explicit mean and (biased) variance, eps 1e-6."""
    u = t.mean(dim, keepdim=True)
    var = (t - u).pow(2).mean(dim, keepdim=True)
    shape = [-1, 1, 1] if dim == 1 else [-1]
    return (t - u) / torch.sqrt(var + 1e-6) * w.view(shape) + b.view(shape)


def gelu(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * t * (1 + torch.erf(t / 2**0.5))


def patchify(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A k x k stride-k conv (stem, downsamples) as a sum over non-overlapping patches, weighted by w, plus b."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    patches = x.reshape(n, c, h // k, k, wd // k, k)
    return torch.einsum("ncyixj,ocij->noyx", patches, w) + b.view(1, -1, 1, 1)


def depthwise7(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A 7x7 depthwise conv, zero padding 3, as 49 shifted products (float64 convs are slow on the CPU)."""
    h, wd = x.shape[-2:]
    xp = F.pad(x, (3, 3, 3, 3))
    out = b.view(1, -1, 1, 1).expand_as(x).clone()
    for i in range(7):
        for j in range(7):
            out += xp[:, :, i : i + h, j : j + wd] * w[:, 0, i, j].view(1, -1, 1, 1)
    return out


def convnext_reference(sd: dict, x: torch.Tensor, depths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ConvNeXt V1 / V2 classifier from the equations in float64: (last feature map, logits)."""
    p = {k: v.double() for k, v in sd.items()}
    x = x.double()
    for s in range(4):
        d = f"downsample_layers.{s}."
        if s == 0:
            x = layer_norm(patchify(x, p[d + "0.weight"], p[d + "0.bias"]), p[d + "1.weight"], p[d + "1.bias"], 1)
        else:
            x = patchify(layer_norm(x, p[d + "0.weight"], p[d + "0.bias"], 1), p[d + "1.weight"], p[d + "1.bias"])
        for j in range(depths[s]):
            k = f"stages.{s}.{j}."
            y = depthwise7(x, p[k + "dwconv.weight"], p[k + "dwconv.bias"])
            y = layer_norm(y.permute(0, 2, 3, 1), p[k + "norm.weight"], p[k + "norm.bias"], -1)
            y = gelu(y @ p[k + "pwconv1.weight"].T + p[k + "pwconv1.bias"])
            if k + "grn.gamma" in p:  # V2: GRN = gamma * (y * N(y)) + beta + y, N = L2 over H, W / its channel mean
                gx = y.pow(2).sum((1, 2), keepdim=True).sqrt()
                y = p[k + "grn.gamma"] * (y * gx / (gx.mean(-1, keepdim=True) + 1e-6)) + p[k + "grn.beta"] + y
            y = y @ p[k + "pwconv2.weight"].T + p[k + "pwconv2.bias"]
            if k + "gamma" in p:
                y = y * p[k + "gamma"]
            x = x + y.permute(0, 3, 1, 2)
    pooled = layer_norm(x.mean((2, 3)), p["norm.weight"], p["norm.bias"], -1)
    return x, pooled @ p["head.weight"].T + p["head.bias"]


_TV_BLOCK = {"dwconv": "block.0", "norm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5"}
_TIMM_BLOCK = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}


def to_torchvision(sd: dict) -> dict:
    """torchvision's convnext_* layout: features.{0,2,4,6} stem / downsamples, features.{1,3,5,7}.j.block.*,
    layer_scale (d, 1, 1), classifier.0 (LayerNorm2d) and classifier.2 (Linear)."""
    out = {}
    for k, v in sd.items():
        top, rest = k.split(".", 1)
        if top == "downsample_layers":
            s, sub = rest.split(".", 1)
            out[f"features.{2 * int(s)}.{sub}"] = v
        elif top == "stages":
            s, j, sub = rest.split(".", 2)
            f = f"features.{2 * int(s) + 1}.{j}"
            if sub == "gamma":
                out[f"{f}.layer_scale"] = v.view(-1, 1, 1)
            else:
                layer, param = sub.split(".")
                out[f"{f}.{_TV_BLOCK[layer]}.{param}"] = v
        else:
            out[f"classifier.{0 if top == 'norm' else 2}.{rest}"] = v
    return out


def to_timm(sd: dict, conv_mlp: bool) -> dict:
    """timm's convnext_* layout: stem.*, stages.s.downsample.*, stages.s.blocks.j.{conv_dw, norm, mlp.fc1, mlp.fc2,
    gamma, mlp.grn.weight / bias (1-D)}, head.norm / head.fc; conv_mlp sizes hold the fc weights as 1x1 convs."""
    out = {}
    for k, v in sd.items():
        top, rest = k.split(".", 1)
        if top == "downsample_layers":
            s, sub = rest.split(".", 1)
            out[f"stem.{sub}" if s == "0" else f"stages.{s}.downsample.{sub}"] = v
        elif top == "stages":
            s, j, sub = rest.split(".", 2)
            f = f"stages.{s}.blocks.{j}"
            if sub in ("gamma", "grn.gamma", "grn.beta"):
                out[f"{f}.{ {'gamma': 'gamma', 'grn.gamma': 'mlp.grn.weight', 'grn.beta': 'mlp.grn.bias'}[sub] }"] = (
                    v.reshape(-1)
                )
            else:
                layer, param = sub.split(".")
                fc = conv_mlp and layer.startswith("pwconv") and param == "weight"
                out[f"{f}.{_TIMM_BLOCK[layer]}.{param}"] = v[..., None, None] if fc else v
        else:
            out[f"head.{'norm' if top == 'norm' else 'fc'}.{rest}"] = v
    return out


def save_paddle(path: Path, sd: dict) -> Path:
    """What paddle.save(model.state_dict()) writes for PaddleClas: numpy arrays under the official names, Linear
    weights [in, out] (head included), and the name table; a plain pickle, protocol 4."""
    linear = ("pwconv1.weight", "pwconv2.weight", "head.weight")
    obj: dict[str, Any] = {k: (v.T if k.endswith(linear) else v).numpy().copy() for k, v in sd.items()}
    obj["StructuredToParameterName@@"] = {k: f"param_{i}.w_0" for i, k in enumerate(sd)}
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def micro_classifier(version: int = 1, nc: int = 10) -> ClassificationModel:
    cfg = {
        "nc": nc,
        "convnext": {**MICRO, "version": version},
        "backbone": [[-1, 1, "ConvNeXt_Block", [s]] for s in range(4)],
        "head": [[-1, 1, "ConvNeXtHead", ["nc"]]],
    }
    return ClassificationModel(cfg)


def micro_c2f_classifier(nc: int = 10) -> ClassificationModel:
    cfg = {
        "nc": nc,
        "conv2former": dict(C2F_MICRO),
        "backbone": [[-1, 1, "Conv2Former_Block", [s]] for s in range(4)],
        "head": [[-1, 1, "Conv2FormerHead", ["nc"]]],
    }
    return ClassificationModel(cfg)


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max()).item()


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
CASES = [  # (file format, model, ConvNeXt version)
    ("official", "micro", 1),
    ("official", "convnext_atto", 1),
    ("official", "micro", 2),
    ("official", "convnextv2_atto", 2),
    ("torchvision", "micro", 1),
    ("timm", "convnext_atto", 1),
    ("timm", "micro", 2),
    ("paddle", "micro", 1),
    ("paddle", "convnext_atto", 1),
]


def write_file(fmt: str, sd: dict, tmp_path: Path) -> Path:
    if fmt == "paddle":
        return save_paddle(tmp_path / "convnext.pdparams", sd)
    if fmt == "official":
        obj = {"model": sd}  # facebookresearch: {"model": state_dict}
    elif fmt == "torchvision":
        obj = to_torchvision(sd)
    else:  # a timm training file (its args pickled), atto..nano style 1x1-conv MLP weights
        obj = {"state_dict": to_timm(sd, conv_mlp=True), "args": argparse.Namespace(model="convnext")}
    torch.save(obj, tmp_path / "convnext.pth")
    return tmp_path / "convnext.pth"


@pytest.mark.parametrize("fmt, name, version", CASES, ids=[f"{f}-{n}-v{v}" for f, n, v in CASES])
def test_convnext_file_loads_head_included_with_reference_logits(fmt: str, name: str, version: int, tmp_path) -> None:
    model = micro_classifier(version) if name == "micro" else ClassificationModel(name)
    spec = model.yaml["convnext"]
    depths, dims = (MICRO["depths"], MICRO["dims"]) if name == "micro" else CONVNEXT[spec["size"]]
    sd = convnext_official(depths, dims, version, model.nc, seed=1)
    report = load_classifier_weights(model, write_file(fmt, sd, tmp_path))
    assert report.backbone.format == fmt and not report.backbone.missing and not report.reset
    assert sorted(report.head) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert report.file_classes == model.nc
    features, logits = convnext_reference(sd, X, depths)
    with torch.no_grad():
        got = model.eval()(X)
        assert rel(model.features(X), features) <= 1e-5
    assert rel(got, logits) <= 1e-5


@pytest.mark.parametrize("name", ["micro", "conv2former_n"])
def test_conv2former_file_loads_head_included_with_reference_logits(name: str, tmp_path: Path) -> None:
    model = micro_c2f_classifier() if name == "micro" else ClassificationModel(name)
    k, depths, dims = (
        (C2F_MICRO["kernel_size"], MICRO["depths"], MICRO["dims"])
        if name == "micro"
        else (7, [2, 2, 8, 2], [64, 128, 256, 512])
    )
    shapes = official_shapes(depths, dims, k) | classifier_shapes(dims[-1], model.nc)
    sd = random_official_state(shapes, seed=2)
    torch.save(
        {"epoch": 299, "state_dict": sd, "args": argparse.Namespace(model="conv2former")}, tmp_path / "c.pth.tar"
    )
    report = load_classifier_weights(model, tmp_path / "c.pth.tar")
    assert report.backbone.format == "Conv2Former official" and len(report.head) == 6 and not report.reset
    x = reference_stages(sd, X, depths, k)[-1]  # float64
    p = {key: v.double() for key, v in sd.items()}
    h = gelu(F.conv2d(x, p["head.0.weight"], p["head.0.bias"]))
    h = ln_channels_first(h, p["head.2.weight"], p["head.2.bias"]).mean((2, 3))
    with torch.no_grad():
        assert rel(model.eval()(X), h @ p["pred.weight"].T + p["pred.bias"]) <= 1e-5


def test_other_class_count_reinitialises_the_final_linear_only(tmp_path: Path, caplog) -> None:
    """A 10-class file on a 5-class model: backbone and LayerNorm load, the Linear is drawn afresh, one line says so."""
    sd = convnext_official(MICRO["depths"], MICRO["dims"], 1, 10, seed=3)
    model = micro_classifier(nc=5)
    with caplog.at_level(logging.INFO, logger="yolo"):
        report = load_classifier_weights(model, write_file("official", sd, tmp_path))
    lines = [r.getMessage() for r in caplog.records if "re-initialised" in r.getMessage()]
    assert len(lines) == 1 and "10 classes, the model 5" in lines[0]
    assert report.reset == ["head.weight", "head.bias"] and sorted(report.head) == ["norm.bias", "norm.weight"]
    head = model.head
    assert torch.equal(head.norm.weight, sd["norm.weight"]) and torch.equal(head.norm.bias, sd["norm.bias"])
    assert head.head.weight.shape == (5, 128) and torch.equal(head.head.bias, torch.zeros(5))
    assert 0.01 < head.head.weight.std().item() < 0.03  # trunc-normal(0.02), not the file's ~1/sqrt(128) = 0.09
    with torch.no_grad():
        assert rel(model.eval().features(X), convnext_reference(sd, X, MICRO["depths"])[0]) <= 1e-5


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_other_family_or_size_is_refused_in_one_line(tmp_path: Path) -> None:
    atto = write_file("official", convnext_official(*CONVNEXT["atto"], 1, 1000), tmp_path)
    for model, words in (
        (ClassificationModel("convnext_femto"), ["ConvNeXt-atto", "ConvNeXt-femto"]),
        (micro_c2f_classifier(), ["Conv2Former", "ConvNeXt-atto"]),
        (ClassificationModel("yolov5n-cls"), ["classifier checkpoint of this project"]),
    ):
        before = snapshot(model)
        with pytest.raises(UserError) as e:
            load_classifier_weights(model, atto)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
        assert unchanged(model, before)


# -------------------------------------------------------------------------------------- our classifier checkpoints
def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every float parameter and buffer drawn afresh (init values would hide a key mapped to the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(
                    torch.rand(v.shape, generator=g) * 0.5 + 0.5
                    if v.ndim == 1
                    else torch.randn(v.shape, generator=g) * 0.1
                )
    return model


def save_classifier(model: nn.Module, path: Path, ema: nn.Module | None = None) -> Path:
    ckpt = new_checkpoint(3, 0.5, model, ema, 10, None, None, {"epochs": 4}, {"lr0": 0.001})
    return save_checkpoint(ckpt, path)


@pytest.mark.parametrize("name", ["micro", "micro_c2f", "yolov5n-cls"])
def test_classifier_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    build = {"micro": micro_classifier, "micro_c2f": micro_c2f_classifier}.get(name, lambda: ClassificationModel(name))
    model = randomised(build(), seed=4).eval()
    model.names = {i: f"class{i}" for i in range(model.nc)}
    rec = model_record(model)
    assert rec["yaml"]["task"] == "classify" and rec["stride"] == [32.0] and rec["nc"] == model.nc
    again = model_from_record(rec).eval()
    assert isinstance(again, ClassificationModel) and again.names == model.names
    with torch.no_grad():
        assert torch.equal(again(X), model(X))
    path = save_classifier(model, tmp_path / "best.pt")
    loaded = load_checkpoint_model(path, fuse=True)
    with torch.no_grad():
        assert rel(loaded(X), model(X).double()) <= 1e-5  # BatchNorm folded into the convs for yolov5n-cls
    fresh = build()
    report = load_classifier_weights(fresh, path)
    assert report.backbone.format == "classifier checkpoint" and not report.reset and fresh.names == model.names
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X), model(X))


def test_classifier_checkpoint_prefers_ema_and_resets_head_for_other_classes(tmp_path: Path, caplog) -> None:
    raw, ema = randomised(micro_classifier(), 5), randomised(micro_classifier(), 6)
    path = save_classifier(raw, tmp_path / "last.pt", ema=ema)
    fresh = micro_classifier()
    load_classifier_weights(fresh, path)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in fresh.state_dict().items())
    load_classifier_weights(fresh, path, ema=False)
    assert all(torch.equal(v, raw.state_dict()[k]) for k, v in fresh.state_dict().items())
    three = micro_classifier(nc=3)
    with caplog.at_level(logging.INFO, logger="yolo"):
        report = load_classifier_weights(three, path)
    assert report.reset == ["head.weight", "head.bias"] and torch.equal(three.head.norm.weight, ema.head.norm.weight)
    assert sum("re-initialised" in r.getMessage() for r in caplog.records) == 1


def test_detection_records_are_unchanged(tmp_path: Path) -> None:
    """A detector's record has no task key (byte-for-byte the layout before classifiers) and rebuilds a Model."""
    rec = model_record(Model(micro_cfg()))
    assert set(rec) == {"yaml", "state_dict", "nc", "names", "stride"} and "task" not in rec["yaml"]
    assert type(model_from_record(rec)) is Model


# ---------------------------------------------------------------------------------- classifier -> detector transfer
def row_outputs(rows: nn.Sequential, n: int, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        for row in rows[:n]:
            x = row(x)
            outs.append(x)
    return outs


@pytest.mark.parametrize("kind", ["convnext", "conv2former", "yolov5n"])
def test_classifier_backbone_goes_into_the_matching_detector(kind: str, tmp_path: Path) -> None:
    cls, det, rows = {
        "convnext": (micro_classifier, lambda: Model(micro_cfg()), 4),
        "conv2former": (micro_c2f_classifier, lambda: Model(micro_c2f_cfg()), 4),
        "yolov5n": (lambda: ClassificationModel("yolov5n-cls"), lambda: Model("yolov5n.yaml"), 9),
    }[kind]
    classifier = randomised(cls(), seed=7).eval()
    path = save_classifier(classifier, tmp_path / "best.pt")
    detector = det().eval()
    before = snapshot(detector)
    report = load_backbone_weights(detector, path)
    assert report.format == "classifier checkpoint" and len(report.skipped) == len(classifier.head.state_dict())
    assert all(k.startswith("model.9.") for k in report.missing)  # yolov5: SPPF, which the classifier replaced
    for ours, theirs in zip(row_outputs(detector.model, rows, X), row_outputs(classifier.model, rows, X)):
        assert torch.equal(ours, theirs)
    untouched = [k for k in before if int(k.split(".")[1]) >= rows]
    assert untouched and all(torch.equal(detector.state_dict()[k], before[k]) for k in untouched)


REFUSED = {  # classifier, detector, words the one line must hold
    "size": (
        lambda: ClassificationModel("convnext_atto", nc=3),
        lambda: Model("yolov5_ConvNeXt-femto.yaml"),
        ["ConvNeXt-atto (V1) classifier", "ConvNeXt-femto (V1) detector"],
    ),
    "version": (
        lambda: micro_classifier(version=2),
        lambda: Model(micro_cfg()),
        ["(V2) classifier", "(V1) detector"],
    ),
    "family": (
        micro_c2f_classifier,
        lambda: Model(micro_cfg()),
        ["Conv2Former(kernel 3, depths [1, 1, 1, 1], dims [16, 32, 64, 128]) classifier", "ConvNeXt(depths="],
    ),
    "yolov5": (
        lambda: ClassificationModel("yolov5n-cls", nc=3),
        lambda: Model("yolov5s.yaml"),
        ["width_multiple 0.25) classifier", "width_multiple 0.5) detector"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_classifier_of_another_size_or_family_is_refused(case: str, tmp_path: Path) -> None:
    cls, det, words = REFUSED[case]
    path = save_classifier(cls(), tmp_path / "best.pt")
    detector = det()
    before = snapshot(detector)
    with pytest.raises(UserError) as e:
        load_backbone_weights(detector, path)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    assert unchanged(detector, before)


def test_detection_checkpoint_as_backbone_or_classifier_weights_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(new_checkpoint(-1, 0.0, Model(micro_cfg()), None, 0, None, None, {}, {}), tmp_path / "d.pt")
    assert load_checkpoint(path)["model"]["yaml"].get("task") is None
    with pytest.raises(UserError, match="is a detection checkpoint of this project, .* pass it to --weights"):
        load_backbone_weights(Model(micro_cfg()), path)
    with pytest.raises(UserError, match="is a detection checkpoint — pass a classifier checkpoint"):
        load_classifier_weights(micro_classifier(), path)
