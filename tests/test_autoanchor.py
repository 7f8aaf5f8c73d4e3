"""utils/training/autoanchor: BPR check, k-means + evolution (no scipy), anchors in grid units in stride order."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import utils.training.autoanchor as aa
from models.yolo import Model, check_anchor_order
from tests.fixtures_models import micro_cfg
from utils.training.autoanchor import bpr_aat, check_anchors, kmean_anchors

DEFAULT_PX = np.array(
    [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]], np.float32
)


def fake_dataset(wh_px: np.ndarray, n_img: int = 40, size: tuple[int, int] = (640, 480), seed: int = 0):
    """n_img images of `size` (w, h), each with boxes drawn from wh_px (pixels at the 640 long side)."""
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(n_img):
        wh = wh_px[rng.integers(len(wh_px), size=6)] / max(size)
        xy = rng.uniform(0.3, 0.7, size=(6, 2))
        labels.append(np.concatenate([np.zeros((6, 1)), xy, wh], 1).astype(np.float32))
    return SimpleNamespace(shapes=np.tile(np.array(size, np.float64), (n_img, 1)), labels=labels)


def pixels(model: Model) -> torch.Tensor:
    m = model.model[-1]
    return m.anchors * m.stride.view(-1, 1, 1)


def assert_stride_order(model: Model) -> None:
    area = pixels(model).prod(-1)  # (nl, na)
    assert torch.all(area[:-1].max(1).values <= area[1:].min(1).values + 1e-3)  # smallest anchors on stride 8


def test_matching_labels_keep_anchors(micro_model, caplog):
    before = micro_model.model[-1].anchors.clone()
    check_anchors(fake_dataset(DEFAULT_PX), micro_model, thr=4.0, imgsz=640)
    assert torch.equal(micro_model.model[-1].anchors, before)
    bpr, aat = bpr_aat(DEFAULT_PX, DEFAULT_PX)
    assert bpr == 1.0 and aat >= 1.0


@pytest.mark.parametrize("box", [(3.0, 3.0), (400.0, 12.0)])  # all tiny / all extreme-aspect boxes
def test_poor_fit_recomputes_better_anchors(box):
    model = Model(micro_cfg())
    ds = fake_dataset(np.array([box], np.float32) * np.linspace(0.8, 1.25, 5)[:, None])
    wh = aa.label_wh(ds, 640)
    old_bpr = bpr_aat(pixels(model).view(-1, 2).numpy(), wh)[0]
    assert old_bpr < 0.98
    model.eval()
    model(torch.zeros(1, 3, 64, 64))  # fills Detect's decode cache with the old anchors
    check_anchors(ds, model, thr=4.0, imgsz=640)
    new_px = pixels(model).view(-1, 2).numpy()
    assert bpr_aat(new_px, wh)[0] > 0.98 > old_bpr
    assert_stride_order(model)
    m = model.model[-1]
    _, anchor_grid = m._grid(8, 8, 0, torch.zeros(1))  # cache rebuilt from the new anchors
    assert torch.allclose(anchor_grid[0, :, 0, 0], pixels(model)[0])
    pred, _ = model(torch.zeros(1, 3, 64, 64))
    assert torch.isfinite(pred).all()


def test_zero_anchors_are_filled_and_wrapped_model_works():
    cfg = micro_cfg()
    cfg["anchors"] = 3  # anchor count only: all zeros until AutoAnchor
    model = Model(cfg)
    assert float(model.model[-1].anchors.abs().sum()) == 0
    wrapper = nn.Module()
    wrapper.module = model  # DDP-style
    ds = fake_dataset(DEFAULT_PX)
    check_anchors(ds, wrapper, imgsz=640)
    assert bpr_aat(pixels(model).view(-1, 2).numpy(), aa.label_wh(ds, 640))[0] > 0.98
    assert_stride_order(model)


def test_worse_new_anchors_are_rejected(micro_model, monkeypatch):
    monkeypatch.setattr(aa, "kmean_anchors", lambda *a, **k: np.full((9, 2), 1000.0, np.float32))
    before = micro_model.model[-1].anchors.clone()
    check_anchors(fake_dataset(np.array([[3.0, 3.0]])), micro_model, imgsz=640)
    assert torch.equal(micro_model.model[-1].anchors, before)


def test_kmean_anchors_deterministic_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy -> ImportError: the numpy path
    monkeypatch.setitem(sys.modules, "scipy.cluster.vq", None)
    rng = np.random.default_rng(3)
    wh = np.concatenate([rng.normal(c, c / 10, size=(60, 2)) for c in (8, 40, 200)]).astype(np.float32)
    k1 = kmean_anchors(wh, n=6, gen=200, verbose=False, seed=1)
    k2 = kmean_anchors(wh, n=6, gen=200, verbose=False, seed=1)
    assert k1.shape == (6, 2) and k1.dtype == np.float32 and np.array_equal(k1, k2)
    assert np.all(np.diff(k1.prod(1)) >= 0)  # sorted by area
    assert bpr_aat(k1, wh)[0] == 1.0
    for c in (8, 40, 200):  # every cluster has an anchor near it
        assert np.min(np.abs(k1.mean(1) - c) / c) < 0.35


def test_kmean_anchors_from_dataset_uses_imgsz():
    ds = fake_dataset(np.array([[20.0, 40.0]]), size=(640, 640))
    k = kmean_anchors(ds, n=3, img_size=320, gen=50, verbose=False)
    assert np.allclose(k.mean(0), [10.0, 20.0], rtol=0.3)  # boxes halve at 320


def test_check_anchor_order_flips_reversed_levels(micro_model):
    m = micro_model.model[-1]
    good = m.anchors.clone()
    px = (good * m.stride.view(-1, 1, 1)).flip(0)  # largest anchors on stride 8
    m.anchors[:] = px / m.stride.view(-1, 1, 1)
    assert check_anchor_order(m) is True
    assert torch.allclose(m.anchors, good)
    assert check_anchor_order(m) is False


def test_model_built_from_reversed_yaml_anchors_keeps_pixel_sizes():
    # a yaml listing the anchors largest-first: the model flips the levels and keeps every anchor's pixel size
    from models.yolo import Model
    from tests.fixtures_models import micro_cfg

    cfg = micro_cfg()
    good = torch.tensor(cfg["anchors"], dtype=torch.float32).view(3, 3, 2)
    cfg["anchors"] = cfg["anchors"][::-1]
    m = Model(cfg).model[-1]
    assert torch.allclose(m.anchors * m.stride.view(-1, 1, 1), good)
