"""Model builder: every yaml, YOLOv5 parameter counts, ConvNeXt stage sizes, Detect decoding, fuse, info,
gradients, layer-decay ids and one-line errors for bad yamls."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models.common import GRN, Block, ConvNeXt_Block, LayerNorm
from models.sizes import CONVNEXT_SIZES, layer_decay_ids, official_sizes
from models.yolo import Model, model_gflops
from tests.fixtures_models import MICRO_CFG, micro_cfg
from utils.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "models").glob("*.yaml"))
BIG = ("large", "xlarge", "huge")  # built on the meta device: shapes and counts only, no memory or init cost


def _convnext_params(depths, dims, version: int) -> int:
    """ConvNeXt backbone parameter count from the architecture description (BRIEF §2), without classifier."""
    n = 3 * dims[0] * 16 + dims[0] + 2 * dims[0]  # stem conv + LN
    n += sum(2 * dims[s - 1] + dims[s - 1] * dims[s] * 4 + dims[s] for s in (1, 2, 3))  # LN + 2x2 conv
    per_block = lambda d: 49 * d + d + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d) + (d if version == 1 else 8 * d)  # noqa: E731
    return n + sum(k * per_block(d) for k, d in zip(depths, dims))


def test_yaml_names_cover_every_size() -> None:
    names = {p.name for p in YAMLS}
    assert {f"yolov5{s}.yaml" for s in "nsmlx"} <= names and "yolov5_ConvNeXt.yaml" in names
    v1 = (set(official_sizes(1)) | {"atto", "femto", "pico", "nano"}) - {"tiny"}  # atto..nano: timm V1 weights
    v2 = set(official_sizes(2))
    assert {f"yolov5_ConvNeXt-{s}.yaml" for s in v1} <= names
    assert {f"yolov5_ConvNeXtV2-{s}.yaml" for s in v2} <= names


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_every_yaml_builds_with_strides_and_backbone_size(path: Path) -> None:
    big = any(path.stem.endswith(s) for s in BIG)
    with torch.device("meta" if big else "cpu"):
        model = Model(path)
    assert model.stride.tolist() == [8.0, 16.0, 32.0] and model.model[-1].stride.shape == (3,)
    d = yaml.safe_load(path.read_text())
    if "convnext" in d:
        size = CONVNEXT_SIZES[d["convnext"]["size"]]
        n_backbone = sum(p.numel() for p in model.model[: model.backbone_rows].parameters())
        assert model.backbone_rows == 4
        assert n_backbone == _convnext_params(size["depths"], size["dims"], d["convnext"]["version"])
        assert [model.model[i].blocks[0].dwconv.out_channels for i in range(4)] == list(size["dims"])
    if not big:
        model.eval()
        with torch.no_grad():
            pred, raw = model(torch.rand(1, 3, 64, 64))
        assert pred.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 85) and torch.isfinite(pred).all()


def test_yolov5_parameter_counts_match_upstream() -> None:
    counts = {n: sum(p.numel() for p in Model(f"yolov5{n}.yaml").parameters()) for n in "nsm"}
    assert counts == {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557}


def test_convnext_tiny_backbone_has_no_duplicated_stages() -> None:
    model = Model("yolov5_ConvNeXt.yaml")
    assert sum(p.numel() for p in model.model[:4].parameters()) == 27_818_592
    assert [len(model.model[i].blocks) for i in range(4)] == [3, 3, 9, 3]
    assert isinstance(model.model[0].downsample[0], torch.nn.Conv2d) and model.model[0].downsample[0].stride == (4, 4)


def test_fuse_keeps_outputs_and_matches_upstream_count() -> None:
    torch.manual_seed(0)
    model = Model("yolov5s.yaml")
    model.train()
    with torch.no_grad():  # a few training-mode passes give BatchNorm non-trivial running statistics
        for _ in range(2):
            model(torch.rand(2, 3, 64, 64))
    model.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert sum(p.numel() for p in model.parameters()) == 7_225_885
    assert (before - after).abs().max() < 1e-3 * before.abs().max()


def test_detect_anchors_in_grid_units_and_bias_prior() -> None:
    model = Model(micro_cfg(nc=3))
    m = model.model[-1]
    px = torch.tensor(MICRO_CFG["anchors"], dtype=torch.float32).view(3, 3, 2)
    assert torch.allclose(m.anchors * m.stride.view(-1, 1, 1), px)
    assert "model.18.anchors" in model.state_dict()  # persisted with the weights (AutoAnchor changes survive)
    for conv, s in zip(m.m, m.stride.tolist()):
        b = conv.bias.detach().view(m.na, -1)
        bound = 1 / math.sqrt(conv.in_channels)  # default init range of a conv bias before the prior is added
        assert (b[:, 4] - math.log(8 / (640 / s) ** 2)).abs().max() <= bound + 1e-6
        assert (b[:, 5:] - math.log(0.6 / (3 - 0.99999))).abs().max() <= bound + 1e-6


def test_train_and_eval_forward_shapes_and_decoding() -> None:
    torch.manual_seed(0)
    model = Model(micro_cfg(nc=3))
    x = torch.rand(2, 3, 64, 96)
    raw = model(x)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    model.eval()
    with torch.no_grad():
        pred, raw = model(x)
    assert pred.shape == (2, 3 * (96 + 24 + 6), 8)
    # Level 1 (stride 16), anchor 2, cell (y=3, x=5): decode by hand.
    r, a = raw[1][1, 2, 3, 5], model.model[-1].anchors[1, 2] * 16
    row = pred[1, 3 * 96 + 2 * 24 + 3 * 6 + 5]
    sig = r.sigmoid()
    assert torch.allclose(row[:2], (sig[:2] * 2 - 0.5 + torch.tensor([5.0, 3.0])) * 16, atol=1e-4)
    assert torch.allclose(row[2:4], (sig[2:4] * 2) ** 2 * a, atol=1e-4)
    assert torch.allclose(row[4:], sig[4:])


@pytest.mark.parametrize("version", [1, 2])
def test_one_training_step_reaches_every_parameter(version: int) -> None:
    torch.manual_seed(0)
    model = Model(micro_cfg(version=version, drop_path=0.2)).train()
    out = model(torch.rand(2, 3, 64, 64))
    sum(r.pow(2).mean() for r in out).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    special = [n for n, _ in model.named_parameters() if n.endswith(("gamma", "grn.beta"))]
    assert len(special) == (4 if version == 1 else 8)  # γ per V1 block; GRN γ, β per V2 block


def test_drop_path_follows_global_linear_rule() -> None:
    model = Model(micro_cfg(depths=[2, 1, 3, 2], drop_path=0.35))
    rates = [b.drop_path.p for i in range(4) for b in model.model[i].blocks]
    assert rates == pytest.approx([0.35 * k / 7 for k in range(8)])


def test_layernorm_and_grn_match_their_formulas() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6)
    ln = LayerNorm(8, data_format="channels_first")
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5), ln.bias.normal_()
    u, v = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    ref = ln.weight[:, None, None] * (x - u) / torch.sqrt(v + 1e-6) + ln.bias[:, None, None]
    assert torch.allclose(ln(x), ref, atol=1e-5)
    grn = GRN(6)
    with torch.no_grad():
        grn.gamma.normal_(), grn.beta.normal_()
    y = x.permute(0, 2, 3, 1)[..., :6]
    g = y.pow(2).sum((1, 2), keepdim=True).sqrt()
    assert torch.allclose(grn(y), grn.gamma * (y * g / (g.mean(-1, keepdim=True) + 1e-6)) + grn.beta + y, atol=1e-5)
    v2 = ConvNeXt_Block(3, 0, [1, 1, 1, 1], [8, 16, 32, 64], version=2).blocks[0]
    v1 = ConvNeXt_Block(3, 0, [1, 1, 1, 1], [8, 16, 32, 64]).blocks[0]
    assert isinstance(v2, Block) and isinstance(v2.grn, GRN) and v2.gamma is None  # V2: GRN, no layer scale
    assert isinstance(v1, Block) and v1.grn is None and v1.gamma.shape == (8,)  # V1: layer scale, no GRN


def test_layer_decay_ids_follow_convnext_rule() -> None:
    ids, num_layers = layer_decay_ids(Model("yolov5_ConvNeXt.yaml"))
    assert num_layers == 6
    assert ids["model.0.downsample.0.weight"] == 0 and ids["model.0.downsample.1.bias"] == 0
    assert ids["model.0.blocks.2.gamma"] == 1
    assert ids["model.1.downsample.1.weight"] == 2 and ids["model.1.blocks.0.pwconv1.weight"] == 2
    assert ids["model.2.downsample.0.weight"] == 3
    assert [ids[f"model.2.blocks.{b}.dwconv.weight"] for b in range(9)] == [3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert ids["model.3.downsample.1.weight"] == 6 and ids["model.3.blocks.2.gamma"] == 6
    assert ids["model.18.m.0.bias"] == 7 and ids["model.4.conv.weight"] == 7
    with torch.device("meta"):
        small = Model("yolov5_ConvNeXt-small.yaml")
    ids, num_layers = layer_decay_ids(small)
    assert num_layers == 12 and ids["model.2.blocks.26.gamma"] == 11 and ids["model.3.blocks.0.gamma"] == 12
    assert set(ids) == {n for n, _ in small.named_parameters()}


def test_info_gflops_and_overrides() -> None:
    model = Model("yolov5s.yaml", nc=5)
    assert model.nc == 5 and model.model[-1].no == 10 and model.names == {i: str(i) for i in range(5)}
    layers, n_p, n_g, gflops = model.info()
    assert n_p == n_g == sum(p.numel() for p in model.parameters()) and layers > 100
    assert 15.5 < gflops < 16.6  # YOLOv5 reports 16.5 (thop also counts BatchNorm)
    micro = Model(micro_cfg())
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        micro.eval()(torch.zeros(1, 3, 256, 192))
    assert model_gflops(micro, [256, 192]) == pytest.approx(fc.get_total_flops() / 1e9, rel=1e-6)
    assert Model(micro_cfg(), anchors=4).model[-1].na == 4


# ---------------------------------------------------------------------------------------------------- bad yamls
def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _rows(cfg: dict, section: str, i: int, row: list) -> dict:
    cfg[section][i] = row
    return cfg


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda c: _rows(c, "head", 0, [-1, 1, "Konv", [128, 1, 1]]), r"row 4 .*unknown module 'Konv'"),
        (lambda c: _rows(c, "backbone", 1, [-1, 1, "ConvNeXt_Block", [1, 96]]), r"row 1 .*args must be \[stage\]"),
        (lambda c: _rows(c, "backbone", 1, [-1, 1, "ConvNeXt_Block", [2]]), r"row 1 .*stage 2 out of order"),
        (lambda c: _rows(c, "head", 2, [[-1, 9], 1, "Concat", [1]]), r"row 6 .*points forward \(row 9\)"),
        (lambda c: {k: v for k, v in c.items() if k != "head"}, r"missing or empty 'head'"),
        (lambda c: {k: v for k, v in c.items() if k != "backbone"}, r"missing or empty 'backbone'"),
        (lambda c: {**c, "convnext": {"size": "tiny", "version": 3}}, r"convnext version must be 1 or 2"),
        (lambda c: {**c, "convnext": "gigantic"}, r"unknown ConvNeXt size 'gigantic'"),
        (lambda c: {**c, "convnext": {"depths": [1, 1, 1], "dims": [8, 16, 32, 64]}}, r"depths must be 4 positive"),
    ],
)
def test_bad_yaml_is_one_line_user_error_naming_file_and_row(tmp_path: Path, change, match: str) -> None:
    path = _write(tmp_path, change(micro_cfg()))
    with pytest.raises(UserError, match=match) as e:
        Model(path)
    assert "bad.yaml" in str(e.value) and "\n" not in str(e.value)


def test_cli_prints_layer_table_and_summary_from_any_cwd(tmp_path: Path) -> None:
    """python -m models.yolo (models/ never edits sys.path: the repository root comes from the cwd or PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "models.yolo", "--cfg", str(ROOT / "models" / "yolov5_ConvNeXt-atto.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "module" in ok.stdout and "ConvNeXt_Block" in ok.stdout
    assert "yolov5_ConvNeXt-atto summary: " in ok.stdout and "5122133 parameters" in ok.stdout
    bad = _write(tmp_path, _rows(micro_cfg(), "head", 0, [-1, 1, "Konv", [1]]))
    err = subprocess.run(
        [sys.executable, "-m", "models.yolo", "--cfg", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert err.returncode == 2 and err.stderr.strip().count("\n") == 0 and "unknown module 'Konv'" in err.stderr
