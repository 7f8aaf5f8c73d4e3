"""utils/training/optim: parameter groups, layer-wise LR decay, LR lambdas, freezing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from models.common import GRN, LayerNorm
from models.yolo import Model
from tests.fixtures_models import micro_cfg
from utils.core.errors import UserError
from utils.training.optim import backbone_indices, build_optimizer, freeze_layers, lr_lambda, unfreeze_layers


def _group_of(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    """Parameter name -> the (single) group holding it; fails if a parameter sits in two groups."""
    by_id: dict[int, dict] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            assert id(p) not in by_id, "parameter in two groups"
            by_id[id(p)] = g
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def v2_model() -> Model:
    return Model(micro_cfg(version=2))


@pytest.mark.parametrize("version", [1, 2])
def test_groups_cover_every_parameter_with_the_right_decay(version):
    model = Model(micro_cfg(version=version))
    opt = build_optimizer(model, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    groups = _group_of(opt, model)
    assert len(groups) == len(list(model.parameters()))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert [g["name"] for g in opt.param_groups] == ["bias", "decay", "no_decay"]
    modules = dict(model.named_modules())
    seen = {"ln": 0, "bn": 0, "gamma": 0, "grn": 0, "conv": 0}
    for name, g in groups.items():
        mod, pname = modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1]
        if pname == "bias":
            assert g["name"] == "bias" and g["weight_decay"] == 0.0, name
        elif isinstance(mod, (LayerNorm, nn.LayerNorm, nn.BatchNorm2d, GRN)) or pname == "gamma":
            assert g["name"] == "no_decay" and g["weight_decay"] == 0.0, name
            key = (
                "grn"
                if isinstance(mod, GRN)
                else "gamma"
                if pname == "gamma"
                else "bn"
                if isinstance(mod, nn.BatchNorm2d)
                else "ln"
            )
            seen[key] += 1
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            assert g["name"] == "decay" and g["weight_decay"] == 5e-4, name
            seen["conv"] += 1
        assert g["lr_scale"] == 1.0 and g["lr"] == 0.01
    assert seen["ln"] and seen["bn"] and seen["conv"]
    assert (seen["gamma"] > 0) == (version == 1) and (seen["grn"] > 0) == (version == 2)


def test_yolov5s_group_counts_match_yolov5():
    opt = build_optimizer(Model("yolov5s.yaml"), "SGD", 0.01, 0.937, 5e-4)
    assert [len(g["params"]) for g in opt.param_groups] == [60, 60, 57]  # biases, weights, BN weights


def test_layer_decay_scales(v2_model):
    from models.sizes import layer_decay_ids

    rate = 0.7
    opt = build_optimizer(v2_model, "AdamW", lr=2e-4, momentum=0.9, decay=0.05, layer_decay=rate)
    groups = _group_of(opt, v2_model)
    ids, num_layers = layer_decay_ids(v2_model)
    assert num_layers == 4  # depths [1,1,1,1]: 3 + 0 + 1
    names = list(groups)
    for n in names[::3] + [
        "model.0.downsample.0.weight",
        "model.2.blocks.0.grn.gamma",
        "model.3.blocks.0.gamma" if "model.3.blocks.0.gamma" in groups else "model.3.blocks.0.pwconv1.weight",
    ]:
        expect = rate ** (num_layers + 1 - ids[n])
        assert groups[n]["lr_scale"] == pytest.approx(expect), n
        assert groups[n]["lr"] == pytest.approx(2e-4 * expect), n
    detect = len(v2_model.model) - 1
    assert groups[f"model.{detect}.m.0.weight"]["lr_scale"] == 1.0
    assert groups["model.0.downsample.0.weight"]["lr_scale"] == pytest.approx(rate**5)  # stem: id 0
    assert all(g["lr_scale"] == 1.0 for g in opt.param_groups[:3])  # results.csv lr0-lr2 = head LRs
    scales = [g["lr_scale"] for g in opt.param_groups]
    assert scales == sorted(scales, reverse=True) and len(set(scales)) == num_layers + 2
    assert all(g["params"] for g in opt.param_groups)  # no empty groups


@pytest.mark.parametrize(
    "name,cls", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)]
)
def test_optimizer_types(name, cls, micro_model):
    opt = build_optimizer(micro_model, name, lr=0.003, momentum=0.85, decay=0.01)
    assert type(opt) is cls
    g = opt.param_groups[0]
    if name == "SGD":
        assert g["nesterov"] is True and g["momentum"] == 0.85
    else:
        assert g["betas"] == (0.85, 0.999)
    if name == "AdamW":  # decoupled decay only on the "decay" group; no-decay groups must not get AdamW's 0.01
        assert [x["weight_decay"] for x in opt.param_groups] == [0.0, 0.01, 0.0]


def test_frozen_params_are_still_in_the_optimizer(micro_model):
    freeze_layers(micro_model, backbone_indices(micro_model))
    opt = build_optimizer(micro_model, "SGD")
    assert len(_group_of(opt, micro_model)) == len(list(micro_model.parameters()))


def test_bad_optimizer_name(micro_model):
    with pytest.raises(UserError, match="--optimizer 'RMSProp'"):
        build_optimizer(micro_model, "RMSProp")
    with pytest.raises(UserError, match="--layer-decay"):
        build_optimizer(micro_model, "AdamW", layer_decay=1.5)


def test_lr_lambda_values():
    lin, cos = lr_lambda(10, 0.01), lr_lambda(10, 0.01, cos=True)
    assert lin(0) == pytest.approx(1.0) and lin(5) == pytest.approx(0.505) and lin(10) == pytest.approx(0.01)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.505) and cos(10) == pytest.approx(0.01)
    assert cos(2) == pytest.approx(((1 - math.cos(0.2 * math.pi)) / 2) * (0.01 - 1) + 1)
    assert cos(2) > lin(2)  # cosine stays high early


def test_freeze_unfreeze_toggle_exactly_the_rows(micro_model):
    wrapped = nn.Module()
    wrapped.module = micro_model  # DDP-like wrapper: names gain "module."
    assert backbone_indices(wrapped) == [0, 1, 2, 3] == list(range(micro_model.backbone_rows))
    freeze_layers(wrapped, [0, 2])
    for n, p in micro_model.named_parameters():
        assert p.requires_grad == (n.split(".")[1] not in ("0", "2")), n
    unfreeze_layers(micro_model, [2])
    for n, p in micro_model.named_parameters():
        assert p.requires_grad == (n.split(".")[1] != "0"), n
    freeze_layers(micro_model, [])  # nothing
    assert sum(not p.requires_grad for p in micro_model.parameters()) == len(list(micro_model.model[0].parameters()))


@pytest.mark.parametrize(
    "name,impl",
    [("SGD", {"foreach": True}), ("Adam", {"foreach": True}), ("AdamW", {"foreach": True}), ("SGD", {"fused": True})],
)
def test_batched_optimizer_kernels_match_the_loop(name, impl, micro_model, monkeypatch):
    """build_optimizer picks foreach (CPU) / fused (CUDA) kernels: the same updates as PyTorch's per-tensor loop.
    fused runs on CPU too, so SGD's is checked here; CPU's fused Adam kernel (not used: CPU gets foreach) differs
    from the loop by up to 2.5e-4 after 3 steps where v ~ 0, so it is not compared."""
    import copy

    import utils.training.optim as optim_mod

    assert optim_mod.step_implementation(list(micro_model.parameters())) == {"foreach": True}  # CPU here
    models, opts = [], []
    for kw in ({"foreach": False}, impl):
        monkeypatch.setattr(optim_mod, "step_implementation", lambda params, kw=kw: dict(kw))
        m = copy.deepcopy(micro_model).train()
        models.append(m)
        opts.append(build_optimizer(m, name, lr=0.01, momentum=0.9, decay=0.05))
    assert opts[0].param_groups[0]["foreach"] is False and opts[1].defaults[next(iter(impl))] is True
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        for m, o in zip(models, opts):
            out = m(x)
            sum(t.float().pow(2).mean() for t in out).backward()
            o.step()
            o.zero_grad()
    a, b = dict(models[0].named_parameters()), dict(models[1].named_parameters())
    changed = sum(int(not torch.equal(a[k], p)) for k, p in micro_model.named_parameters())
    assert changed > 0.9 * len(a)  # the steps really moved the weights
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (k, float((a[k] - b[k]).abs().max()))
