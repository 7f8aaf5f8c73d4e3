"""Speed options of the training loop (issue: speed and scale): --channels-last and --compile change how the step
runs, never what it computes."""

from __future__ import annotations

import logging

import pytest
import torch

from models.yolo import Model
from utils.training.compiled import CompiledForward
from utils.training.loss import ComputeLoss

HYP = {
    "box": 0.05,
    "cls": 0.5,
    "cls_pw": 1.0,
    "obj": 1.0,
    "obj_pw": 1.0,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
    "label_smoothing": 0.0,
}


def _loss_and_grads(fmt: torch.memory_format) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=3).to(memory_format=fmt).train()
    model.hyp = dict(HYP)
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(2, 3, 96, 96, generator=g).contiguous(memory_format=fmt)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.3, 0.6, 0.2, 0.2]])
    loss, _ = ComputeLoss(model)(model(imgs), targets)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_channels_last_step_equals_contiguous():
    loss_a, grads_a = _loss_and_grads(torch.contiguous_format)
    loss_b, grads_b = _loss_and_grads(torch.channels_last)
    assert loss_b == pytest.approx(loss_a, rel=1e-5) and loss_a > 0
    for n, g in grads_a.items():  # NHWC kernels sum in another order: compare each gradient by its norm
        rel = float((grads_b[n] - g).norm() / g.norm().clamp_min(1e-12))
        assert rel < 1e-4, (n, rel)


def test_compile_falls_back_with_one_warning(monkeypatch, caplog):
    """Where torch.compile is unavailable (here: made to fail at the first call, as a missing compiler does),
    the eager module runs every batch and exactly one warning is logged."""
    model = torch.nn.Conv2d(3, 4, 3)

    def broken(*a, **k):
        raise RuntimeError("inductor: no working C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda m, **kw: broken)
    fwd = CompiledForward(model, enabled=True)
    x = torch.rand(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="yolo"):
        outs = [fwd(x) for _ in range(3)]
    warnings = [r for r in caplog.records if "--compile" in r.getMessage()]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0].getMessage()
    assert not fwd.active and all(torch.equal(o, model(x)) for o in outs)


def test_compile_refused_at_wrap_time_and_disabled(monkeypatch):
    model = torch.nn.Linear(2, 2)
    assert not CompiledForward(model, enabled=False).active
    monkeypatch.setattr(torch, "compile", lambda m, **kw: (_ for _ in ()).throw(RuntimeError("unsupported")))
    fwd = CompiledForward(model, enabled=True)
    x = torch.rand(1, 2)
    assert not fwd.active and torch.equal(fwd(x), model(x))


def test_compile_error_after_first_success_propagates(monkeypatch):
    """Only the first call may fall back: a later failure is a real error, not 'compile unavailable'."""
    calls = {"n": 0}
    model = torch.nn.Linear(2, 2)

    def flaky(x):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("shape error")
        return model(x)

    monkeypatch.setattr(torch, "compile", lambda m, **kw: flaky)
    fwd = CompiledForward(model, enabled=True)
    fwd(torch.rand(1, 2))
    with pytest.raises(RuntimeError, match="shape error"):
        fwd(torch.rand(1, 2))


def test_channels_last_and_compile_fallback_train_like_nchw(shapes_yaml, micro_cfg_file, tmp_path, monkeypatch, caplog):
    """Two epochs in the default channels-last layout with a failing --compile end where a --no-channels-last run
    ends: same weights (to float rounding); the checkpoint holds plain contiguous tensors and loads into an ordinary
    (contiguous) model."""
    import train
    from tests.fixtures_train import train_hyp

    kw = dict(
        cfg=str(micro_cfg_file),
        data=str(shapes_yaml),
        hyp=train_hyp(),
        epochs=2,
        batch_size=16,
        imgsz=64,
        project=str(tmp_path),
        workers=0,
        device="cpu",
        noplots=True,
        noval=True,
        noautoanchor=True,
        seed=0,
    )
    base = train.run(**kw, name="base", channels_last=False)
    monkeypatch.setattr(torch, "compile", lambda m, **k: lambda *a: (_ for _ in ()).throw(RuntimeError("no cc")))
    with caplog.at_level(logging.WARNING, logger="yolo"):
        fast = train.run(**kw, name="fast", compile=True)  # channels-last is the default
    assert sum("--compile" in r.getMessage() for r in caplog.records) == 1
    a = torch.load(base["last"], weights_only=True)["model"]["state_dict"]
    b = torch.load(fast["last"], weights_only=True)["model"]["state_dict"]
    moved = 0
    for k, v in a.items():
        if v.is_floating_point():
            assert torch.allclose(b[k].float(), v.float(), rtol=1e-3, atol=1e-4), k
            moved += 1
    assert moved > 50
    assert all(v.is_contiguous() for v in b.values())  # not NHWC strides: the same file whatever the layout
    from models.checkpoint import load_checkpoint_model

    m = load_checkpoint_model(fast["last"])
    assert all(p.is_contiguous() for p in m.parameters())


def test_channels_last_is_the_default_and_can_be_turned_off():
    import train

    assert train.parse_opt([]).channels_last is True
    assert train.parse_opt(["--no-channels-last"]).channels_last is False
    assert train.parse_opt(["--channels-last"]).channels_last is True
