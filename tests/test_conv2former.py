"""Conv2Former backbone: official parameter counts for every size, stage outputs equal to an independent functional
reference (tests/reference_conv2former.py) given the same official-named weights, yaml key errors, layer-decay ids /
no-decay groups, a training step and ONNX export of a micro Conv2Former-YOLOv5."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from models.common import Conv2Former_Block
from models.sizes import CONV2FORMER_SIZES, layer_decay_ids, resolve_conv2former
from models.yolo import Model
from tests.fixtures_models import micro_c2f_cfg
from tests.reference_conv2former import (
    max_rel_diff,
    official_shapes,
    our_backbone,
    random_official_state,
    reference_stages,
    to_rows,
)
from utils.core.errors import UserError
from utils.training.optim import backbone_indices, build_optimizer, freeze_layers, param_kinds

ROOT = Path(__file__).resolve().parents[1]
# BRIEF §5: the official models' `downsample_layers` + `stages` parameter counts (no classifier).
OFFICIAL_BACKBONE_PARAMS = {
    "n": 13_052_640,
    "t": 24_675_084,
    "s": 48_010_572,
    "b": 87_761_232,
    "b_22k": 86_517_072,
    "l": 196_298_176,
}
YAMLS = {size: ROOT / "models" / f"yolov5_Conv2Former-{size}.yaml" for size in OFFICIAL_BACKBONE_PARAMS}
CUSTOM = {"kernel_size": 5, "depths": [1, 2, 1, 1], "dims": [16, 24, 32, 48]}  # a small custom size


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("size", list(OFFICIAL_BACKBONE_PARAMS))
def test_backbone_parameter_count_equals_official(size: str) -> None:
    spec = resolve_conv2former(size)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = our_backbone(spec)
    assert sum(p.numel() for p in ours.parameters()) == OFFICIAL_BACKBONE_PARAMS[size]
    shapes = official_shapes(spec["depths"], spec["dims"], spec["kernel_size"])
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == to_rows(shapes)


@pytest.mark.parametrize("size", list(OFFICIAL_BACKBONE_PARAMS))
def test_shipped_yaml_builds_the_size(size: str) -> None:
    with torch.device("meta"):
        model = Model(YAMLS[size])
    rows = model.model[: model.backbone_rows]
    assert model.backbone_rows == 4 and all(isinstance(r, Conv2Former_Block) for r in rows)
    assert sum(p.numel() for p in rows.parameters()) == OFFICIAL_BACKBONE_PARAMS[size]
    assert [r.blocks[0].attn.att[2].kernel_size[0] for r in rows] == [CONV2FORMER_SIZES[size]["kernel_size"]] * 4
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


@pytest.mark.parametrize(("spec", "imgsz"), [(CUSTOM, 64), ("n", 64)], ids=["custom", "n"])
def test_stage_outputs_equal_independent_reference(spec, imgsz: int) -> None:
    spec = resolve_conv2former(spec)
    depths, dims, k = spec["depths"], spec["dims"], spec["kernel_size"]
    sd = random_official_state(official_shapes(depths, dims, k))
    ours = our_backbone(spec).eval()
    ours.load_state_dict(to_rows(sd), strict=True)
    x = torch.randn(2, 3, imgsz, imgsz + 32, generator=torch.Generator().manual_seed(1))
    want = reference_stages(sd, x, depths, k)
    for fmt in (torch.contiguous_format, torch.channels_last):  # training and inference run channels-last
        ours = ours.to(memory_format=fmt)
        outs, h = [], x.contiguous(memory_format=fmt)
        with torch.no_grad():
            for row in ours:
                h = row(h)
                outs.append(h)
        assert [tuple(o.shape) for o in outs] == [tuple(w.shape) for w in want]
        assert [o.shape[-1] for o in outs] == [(imgsz + 32) // s for s in (4, 8, 16, 32)]
        diffs = [max_rel_diff(o, w) for o, w in zip(outs, want)]
        assert max(diffs) <= 1e-5, diffs
        assert min(w.abs().max().item() for w in want) > 0.1  # a real signal, not a vanishing one


def test_stem_batchnorm_keeps_official_eps_and_drop_path_is_global_linear() -> None:
    model = Model(micro_c2f_cfg(depths=[2, 1, 3, 2], drop_path=0.35))
    bns = [m for m in model.model[0].downsample if isinstance(m, nn.BatchNorm2d)]
    assert [(b.eps, b.momentum) for b in bns] == [(1e-5, 0.1)] * 2  # YOLOv5's 1e-3 / 0.03 would shift ImageNet stats
    assert model.model[4].bn.eps == 1e-3  # head Conv rows keep YOLOv5's settings
    rates = [b.drop_path.p for i in range(4) for b in model.model[i].blocks]
    assert rates == pytest.approx([0.35 * k / 7 for k in range(8)])
    ls = [b.layer_scale_1 for i in range(4) for b in model.model[i].blocks]
    assert all(torch.equal(p, torch.full_like(p, 1e-6)) for p in ls)


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "c2f.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"conv2former": "q"}, r"unknown Conv2Former size 'q' — use one of n, t, s, b, b_22k, l"),
        ({"conv2former": {"size": "t", "kernel": 7}}, r"unknown key\(s\) \['kernel'\] under 'conv2former'"),
        ({"conv2former": {"size": "t", "kernel_size": 8}}, r"kernel_size must be a positive odd integer"),
        ({"conv2former": {"size": "t", "layer_scale_init": 0}}, r"layer_scale_init must be > 0"),
        ({"conv2former": {"size": "t", "drop_path": 1.5}}, r"drop_path must be a number in \[0, 1\)"),
        ({"conv2former": {"depths": [1, 1, 1]}}, r"conv2former depths must be 4 positive integers"),
        ({"conv2former": {"kernel_size": 7}}, r"'conv2former' needs a size or explicit depths and dims"),
        ({"conv2former": {"size": "n", "dims": [15, 32, 64, 128]}}, r"dims\[0\] must be even"),
        ({"convnext": "tiny"}, r"both 'convnext' and 'conv2former' keys"),
    ],
)
def test_bad_conv2former_key_is_one_line_naming_the_yaml(tmp_path: Path, change: dict, match: str) -> None:
    cfg = micro_c2f_cfg()
    cfg.update(change)
    path = _write(tmp_path, cfg)
    with pytest.raises(UserError, match=match) as e:
        Model(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_rows_need_the_key_and_a_stage_arg(tmp_path: Path) -> None:
    cfg = micro_c2f_cfg()
    del cfg["conv2former"]
    with pytest.raises(UserError, match=r"row 0 .*Conv2Former_Block needs a top-level 'conv2former:' key"):
        Model(_write(tmp_path, cfg))
    cfg = micro_c2f_cfg()
    cfg["backbone"][1] = [-1, 2, "Conv2Former_Block", [1]]
    with pytest.raises(UserError, match=r"row 1 .*number must be 1 \(depths come from the 'conv2former' key\)"):
        Model(_write(tmp_path, cfg))
    cfg["backbone"][1] = [-1, 1, "Conv2Former_Block", [4]]
    with pytest.raises(UserError, match=r"args must be \[stage\] with stage 0..3"):
        Model(_write(tmp_path, cfg))


def test_cli_bad_size_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = micro_c2f_cfg()
    cfg["conv2former"] = {"size": "xl"}
    path = _write(tmp_path, cfg)
    r = subprocess.run(
        [sys.executable, "-m", "models.yolo", "--cfg", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"ERROR: {path}: unknown Conv2Former size 'xl' — use one of n, t, s, b, b_22k, l"
    ]


def test_layer_decay_ids_follow_the_convnext_rule() -> None:
    with torch.device("meta"):
        model = Model(YAMLS["t"])  # depths 3,3,12,3: stage-2 blocks in groups of 3 -> ids 3..6, num_layers 7
    ids, num_layers = layer_decay_ids(model)
    assert num_layers == 7
    assert {ids[f"model.0.downsample.{i}.weight"] for i in (0, 2, 3, 5, 6)} == {0}
    assert ids["model.0.blocks.2.layer_scale_1"] == 1
    assert ids["model.1.downsample.1.weight"] == 2 and ids["model.1.blocks.0.mlp.fc1.weight"] == 2
    assert ids["model.2.downsample.0.weight"] == 3
    assert [ids[f"model.2.blocks.{b}.attn.att.2.weight"] for b in range(12)] == [3] * 3 + [4] * 3 + [5] * 3 + [6] * 3
    assert ids["model.3.downsample.1.bias"] == 7 and ids["model.3.blocks.2.layer_scale_2"] == 7
    assert ids["model.4.conv.weight"] == 8 and ids["model.18.m.0.bias"] == 8
    assert set(ids) == {n for n, _ in model.named_parameters()}


def test_no_decay_on_norms_biases_and_layer_scales() -> None:
    model = Model(micro_c2f_cfg())
    kinds = param_kinds(model)
    b0 = "model.1.blocks.0."
    assert kinds[b0 + "layer_scale_1"] == kinds[b0 + "layer_scale_2"] == "no_decay"
    assert kinds[b0 + "attn.norm.weight"] == kinds["model.2.downsample.0.weight"] == "no_decay"  # LayerNorms
    assert kinds["model.0.downsample.2.weight"] == kinds["model.0.downsample.5.weight"] == "no_decay"  # stem BNs
    assert kinds[b0 + "attn.v.bias"] == kinds[b0 + "attn.norm.bias"] == "bias"
    assert kinds[b0 + "attn.att.0.weight"] == kinds["model.0.downsample.0.weight"] == "decay"
    opt = build_optimizer(model, "AdamW", lr=1e-3, momentum=0.9, decay=0.05, layer_decay=0.8)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert decay_of[id(params[b0 + "layer_scale_2"])] == 0.0 and decay_of[id(params[b0 + "mlp.fc2.weight"])] == 0.05
    scales = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scales[id(params["model.0.downsample.0.weight"])] == pytest.approx(0.8**5)  # num_layers 4: 0.8^(4+1-0)


def test_micro_model_trains_a_step_and_freezes_its_backbone() -> None:
    from utils.training.loss import ComputeLoss, scale_loss_gains

    torch.manual_seed(0)
    model = Model(micro_c2f_cfg(drop_path=0.2)).train().to(memory_format=torch.channels_last)
    model.hyp = scale_loss_gains(
        {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0}, 3, 2, 128
    )
    targets = torch.tensor([[0, 0, 0.3, 0.4, 0.2, 0.3], [1, 1, 0.6, 0.5, 0.5, 0.4], [1, 0, 0.5, 0.5, 0.9, 0.8]])
    freeze_layers(model, backbone_indices(model)[:1])  # the stem + stage 0 row
    opt = build_optimizer(model, "SGD", lr=0.01, momentum=0.9, decay=5e-4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, _ = ComputeLoss(model)(
        model(torch.rand(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)), targets
    )
    loss.backward()
    opt.step()
    frozen = {n for n, _ in model.named_parameters() if n.startswith("model.0.")}
    no_grad = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert torch.isfinite(loss) and frozen and no_grad == frozen  # every other parameter, layer scales included
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.model[1].blocks[0].attn.v.weight, before["model.1.blocks.0.attn.v.weight"])


def test_micro_model_exports_to_onnx_and_torchscript_matching_pytorch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import export
    from models.checkpoint import model_record, save_checkpoint
    from utils.inference.backend import DetectBackend

    torch.manual_seed(3)
    model = Model(micro_c2f_cfg()).eval()
    with torch.no_grad():  # layer scales of 1e-6 would hide the blocks from the comparison
        for n, p in model.named_parameters():
            if "layer_scale" in n:
                p.uniform_(0.5, 1.5)
    pt = save_checkpoint({"epoch": -1, "model": model_record(model), "ema": None}, tmp_path / "c2f.pt")
    files = export.run(weights=pt, imgsz=(64, 96), include=["torchscript", "onnx"], dynamic=True)
    ref = DetectBackend(pt)
    x = torch.rand(2, 3, 96, 64)  # ONNX with dynamic axes: another batch and shape than the export's
    x1 = torch.rand(1, 3, 64, 96)  # TorchScript: the traced shape
    with torch.no_grad():
        got, want = DetectBackend(files["onnx"])(x), ref(x)
        got1, want1 = DetectBackend(files["torchscript"])(x1), ref(x1)
    assert got.shape == want.shape == (2, 3 * (12 * 8 + 6 * 4 + 3 * 2), 7) and got1.shape == want1.shape
    assert (got - want).abs().max().item() < 1e-4 and (got1 - want1).abs().max().item() < 1e-4
