"""utils/ema.ModelEMA: exact decay formula, buffers, attributes, fp32 / no-grad copy, DDP-style wrappers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from benchmarks.reference import LoopEMA
from utils.training.ema import ModelEMA


class OneParam(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))
        self.bn = nn.BatchNorm1d(1)
        self.names = {0: "a"}


def test_ema_follows_exact_formula():
    model = OneParam(0.0)
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    with torch.no_grad():
        model.w.fill_(1.0)  # constant target from now on
    expected = 0.0
    for k in range(1, 6):
        ema.update(model)
        d = 0.9 * (1 - math.exp(-k / 3.0))
        expected = d * expected + (1 - d) * 1.0
        assert ema.ema.w.item() == pytest.approx(expected, rel=1e-6)
    assert ema.updates == 5 and 0.4 < expected < 1.0  # approaching but not yet at the model
    for _ in range(200):
        ema.update(model)
    assert ema.ema.w.item() == pytest.approx(1.0, abs=1e-6)


def test_first_update_copies_model_and_resume_count_matters():
    model = OneParam(2.0)
    fresh, resumed = ModelEMA(model, tau=2000), ModelEMA(model, tau=2000, updates=10_000)
    with torch.no_grad():
        model.w.fill_(4.0)
    fresh.update(model)
    resumed.update(model)
    d1 = 0.9999 * (1 - math.exp(-1 / 2000))
    assert fresh.ema.w.item() == pytest.approx(2.0 * d1 + 4.0 * (1 - d1), rel=1e-6)  # ~4: early EMA tracks model
    d = 0.9999 * (1 - math.exp(-10_001 / 2000))
    assert resumed.ema.w.item() == pytest.approx(2.0 * d + 4.0 * (1 - d), rel=1e-6)


def test_buffers_follow_and_int_buffers_untouched():
    model = OneParam(0.0)
    ema = ModelEMA(model, decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    model.bn.train()
    model.bn(torch.randn(16, 1) + 10.0)  # running_mean moves towards 10
    target = model.bn.running_mean.clone()
    ema.update(model)
    assert ema.ema.bn.running_mean.item() == pytest.approx(0.5 * 0.0 + 0.5 * target.item(), rel=1e-5)
    assert ema.ema.bn.num_batches_tracked.item() == 0  # integer buffers are not averaged


def test_ema_is_fp32_eval_no_grad_and_unwraps():
    model = OneParam(1.0).half()
    wrapper = nn.Module()
    wrapper.module = model  # DDP-style
    ema = ModelEMA(wrapper)
    assert not ema.ema.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ema.ema.parameters())
    assert model.w.requires_grad and model.w.dtype == torch.float16  # model untouched
    assert not hasattr(ema.ema, "module") and isinstance(ema.ema, OneParam)
    with torch.no_grad():
        model.w.fill_(3.0)
    ema.update(wrapper)  # half model state into the fp32 EMA
    assert ema.ema.w.dtype == torch.float32 and ema.ema.w.item() > 2.99


def test_update_attr_include_exclude():
    model = OneParam(0.0)
    ema = ModelEMA(model)
    model.names, model.nc, model.hyp, model.process_group = {0: "x", 1: "y"}, 2, {"lr0": 1}, "pg"
    ema.update_attr(model, include=["names", "nc"])
    assert ema.ema.names == {0: "x", 1: "y"} and ema.ema.nc == 2 and not hasattr(ema.ema, "hyp")
    ema.update_attr(model)
    assert ema.ema.hyp == {"lr0": 1} and not hasattr(ema.ema, "process_group")


def test_ema_on_real_model(micro_model):
    ema = ModelEMA(micro_model)
    with torch.no_grad():
        for p in micro_model.parameters():
            p.add_(1.0)
    ema.update(micro_model)
    p0, e0 = next(micro_model.parameters()), next(ema.ema.parameters())
    assert not torch.equal(p0, e0) and torch.allclose(e0, p0, atol=1e-3)  # d ~ 5e-4 at the first update
    assert torch.allclose(ema.ema.model[-1].anchors, micro_model.model[-1].anchors, rtol=1e-6)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_batched_update_matches_per_tensor_loop(fmt):
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=3).to(memory_format=fmt).train()
    ema = ModelEMA(model, tau=5.0)
    ref = LoopEMA(model, tau=5.0)  # YOLOv5's per-tensor loop
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(1, 4):  # real steps: parameters and BN running stats change between updates
        model(torch.rand(2, 3, 64, 64).contiguous(memory_format=fmt))[0].mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
        ref.update(model)
    got, want = ema.ema.state_dict(), ref.ema.state_dict()
    moved = 0
    for k, v in want.items():
        assert torch.allclose(got[k], v, rtol=1e-5, atol=1e-6), k  # lerp rounds a little differently
        moved += int(not torch.equal(v, model.state_dict()[k]))
    assert moved > 100  # the EMA really lags the model (d > 0), so the comparison is not trivially equal
