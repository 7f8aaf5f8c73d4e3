"""The hub results are YOLOv5's Detections: every attribute and method with YOLOv5's types, shapes, coordinate
spaces and files, and the tools built on them (supervision's from_yolov5) read them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.inference.api import Detections, ImageResult

NAMES = {0: "circle", 1: "square"}


def _results() -> Detections:
    """Two images: a 100x200 one (path a.jpg) with two boxes, and a 50x50 array (no path) with none."""
    im = np.zeros((100, 200, 3), np.uint8)
    im[:, :, 0] = 255  # BGR blue: ims must come back red-free, blue in RGB's last channel
    boxes = torch.tensor([[20.0, 10.0, 60.0, 50.0, 0.9, 1.0], [100.0, 20.0, 180.0, 90.0, 0.5, 0.0]])
    a = ImageResult(im, boxes, NAMES, "/some/where/a.jpg")
    b = ImageResult(np.zeros((50, 50, 3), np.uint8), torch.zeros(0, 6), NAMES, "")
    return Detections([a, b], times={"preprocess": 2.0, "inference": 6.0, "nms": 1.0}, shape=(2, 3, 128, 224))


def test_attributes_have_yolov5s_types_and_spaces():
    r = _results()
    assert r.names == NAMES and r.files == ["a.jpg", "image1.jpg"] and r.s == (2, 3, 128, 224) and len(r) == 2
    assert r.t == (1.0, 3.0, 0.5)  # per image: the batch's milliseconds / 2
    assert [im.shape for im in r.ims] == [(100, 200, 3), (50, 50, 3)]
    assert r.ims[0][0, 0].tolist() == [0, 0, 255]  # RGB
    assert torch.equal(r.pred[0], r.xyxy[0]) and r.pred[1].shape == (0, 6)  # original pixels
    torch.testing.assert_close(r.xyxyn[0][:, :4], r.pred[0][:, :4] / torch.tensor([200.0, 100.0, 200.0, 100.0]))


def test_render_draws_where_the_boxes_are():
    r = _results()
    out = r.render()
    assert out is r.ims and out[0].shape == (100, 200, 3)
    inside_edge, far = out[0][10:50, 20], out[0][95, 5]
    assert (inside_edge != [0, 0, 255]).any(axis=1).any() and far.tolist() == [0, 0, 255]  # box edge drawn, rest kept
    assert np.array_equal(out[1], np.zeros((50, 50, 3), np.uint8))


def test_crop_returns_yolov5s_dicts_and_never_overwrites(tmp_path):
    r = _results()
    crops = r.crop(save=True, save_dir=tmp_path / "exp", exist_ok=True)
    assert [c["label"] for c in crops] == ["square 0.90", "circle 0.50"]
    assert set(crops[0]) == {"box", "conf", "cls", "label", "im"} and crops[0]["cls"].item() == 1.0
    assert crops[0]["box"].tolist() == [20.0, 10.0, 60.0, 50.0] and crops[0]["im"].ndim == 3
    r.crop(save=True, save_dir=tmp_path / "exp", exist_ok=True)  # the same names again
    assert sorted(p.name for p in (tmp_path / "exp" / "crops" / "square").iterdir()) == ["a.jpg", "a2.jpg"]
    assert len(r.crop(save=False)) == 2


def test_save_increments_and_keeps_same_named_files(tmp_path):
    r = _results()
    d1, d2 = r.save(save_dir=tmp_path / "exp"), r.save(save_dir=tmp_path / "exp")
    assert (d1.name, d2.name) == ("exp", "exp2") and sorted(p.name for p in d1.iterdir()) == ["a.jpg", "image1.jpg"]
    r.save(save_dir=d1, exist_ok=True)
    assert sorted(p.name for p in d1.iterdir()) == ["a.jpg", "a2.jpg", "image1.jpg", "image12.jpg"]


def test_tolist_gives_complete_one_image_results():
    parts = _results().tolist()
    assert [len(p) for p in parts] == [1, 1] and parts[0].files == ["a.jpg"] and parts[1].files == ["image1.jpg"]
    assert parts[0].s == (1, 3, 128, 224) and parts[0].t == (1.0, 3.0, 0.5)
    assert torch.equal(parts[0].pred[0], _results().pred[0])


def test_show_without_a_display_warns(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    _results().show()
    assert "needs a display" in caplog.text


def test_supervision_reads_our_results():
    sv = pytest.importorskip("supervision", reason="supervision is in requirements-test.txt only")
    r = _results()
    d = sv.Detections.from_yolov5(r)
    np.testing.assert_allclose(d.xyxy, r.pred[0][:, :4].numpy())
    np.testing.assert_allclose(d.confidence, r.pred[0][:, 4].numpy())
    assert d.class_id.tolist() == [1, 0]
