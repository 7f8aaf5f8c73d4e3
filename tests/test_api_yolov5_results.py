"""The hub results are YOLOv5's Detections: every attribute and method with YOLOv5's types, shapes, coordinate
spaces and files, and the tools built on them (supervision's from_yolov5, SAHI's conf/iou/size) read them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_api import scene, stub_detector
from utils.core.plots import colors
from utils.inference.api import Detections, ImageResult, as_image_list

NAMES = {0: "circle", 1: "square"}
BLUE_RGB = [0, 0, 255]


def _results() -> Detections:
    """Two images: a 100x200 blue one (path a.png) with two boxes, and a 50x50 array (no path) with none."""
    im = np.zeros((100, 200, 3), np.uint8)
    im[:, :, 0] = 255  # BGR blue: in RGB (ims, render) it is the last channel
    boxes = torch.tensor([[20.0, 10.0, 60.0, 50.0, 0.9, 1.0], [100.0, 20.0, 180.0, 90.0, 0.5, 0.0]])
    a = ImageResult(im, boxes, NAMES, "/some/where/a.png")
    b = ImageResult(np.zeros((50, 50, 3), np.uint8), torch.zeros(0, 6), NAMES, "")
    return Detections([a, b], times={"preprocess": 2.0, "inference": 6.0, "nms": 1.0}, shape=(2, 3, 128, 224))


def test_attributes_have_yolov5s_types_and_spaces():
    r = _results()
    assert r.names == NAMES and r.s == (2, 3, 128, 224) and len(r) == r.n == 2
    assert r.files == ["a.jpg", "image1.jpg"]  # YOLOv5: the input's name with .jpg (what save writes), else image<i>
    assert r.t == (1.0, 3.0, 0.5) and all(isinstance(v, float) for v in r.t)  # ms per image: the batch's / 2
    assert [im.shape for im in r.ims] == [(100, 200, 3), (50, 50, 3)] and r.ims[0].dtype == np.uint8
    assert r.ims[0][0, 0].tolist() == BLUE_RGB  # RGB
    assert isinstance(r.pred, list) and r.pred[0].shape == (2, 6) and r.pred[1].shape == (0, 6)
    assert r.pred[0][0].tolist() == pytest.approx([20.0, 10.0, 60.0, 50.0, 0.9, 1.0])  # original pixels
    assert torch.equal(r.pred[0], r.xyxy[0])
    wh = torch.tensor([200.0, 100.0, 200.0, 100.0])
    torch.testing.assert_close(r.xyxyn[0][:, :4], r.pred[0][:, :4] / wh)
    torch.testing.assert_close(r.xywhn[0][0, :4], torch.tensor([40.0, 30.0, 40.0, 40.0]) / wh)


def test_str_and_print_are_yolov5s_lines(caplog):
    r = _results()
    text = str(r)
    assert text.splitlines() == [
        "image 1/2: 100x200 1 square, 1 circle",
        "image 2/2: 50x50 (no detections)",
        "Speed: 1.0ms pre-process, 3.0ms inference, 0.5ms NMS per image at shape (2, 3, 128, 224)",
    ]
    with caplog.at_level(logging.INFO, logger="yolo"):
        r.print()
    assert text in caplog.text


def test_render_draws_where_the_boxes_are():
    r = _results()
    out = r.render()
    assert out is r.ims and out[0].shape == (100, 200, 3) and out[0].dtype == np.uint8
    square, circle = colors(1), colors(0)  # RGB, as YOLOv5 draws on its RGB ims
    assert out[0][40, 20].tolist() == list(square) and out[0][50, 40].tolist() == list(square)  # left, bottom edge
    assert out[0][60, 180].tolist() == list(circle)  # the circle box's right edge
    assert out[0][40, 40].tolist() == BLUE_RGB and out[0][5, 195].tolist() == BLUE_RGB  # inside / outside untouched
    assert np.array_equal(out[1], np.zeros((50, 50, 3), np.uint8))  # no boxes: unchanged
    assert _results().ims[0][40, 20].tolist() == BLUE_RGB  # rendering annotated a copy, not the stored image
    bare = _results().render(labels=False)[0]
    assert bare[40, 20].tolist() == list(square) and (bare[13:47, 23:57] == BLUE_RGB).all()  # the box only
    assert not (out[0][13:47, 23:57] == BLUE_RGB).all()  # with labels: "square 0.90" drawn in its corner


def test_crop_returns_yolov5s_dicts_and_never_overwrites(tmp_path):
    r = _results()
    crops = r.crop(save=True, save_dir=tmp_path / "exp", exist_ok=True)
    assert [c["label"] for c in crops] == ["circle 0.50", "square 0.90"]  # YOLOv5's order: lowest confidence first
    sq = crops[1]
    assert set(sq) == {"box", "conf", "cls", "label", "im"} and isinstance(sq["box"], list)
    assert [b.item() for b in sq["box"]] == [20.0, 10.0, 60.0, 50.0] and sq["box"][0].ndim == 0
    assert sq["conf"].item() == pytest.approx(0.9) and sq["cls"].item() == 1.0
    # the box grown by 2 % + 10 px (x 14..65, y 4..55), BGR like YOLOv5's crops
    assert sq["im"].shape == (51, 51, 3) and sq["im"][0, 0].tolist() == [255, 0, 0]
    r.crop(save=True, save_dir=tmp_path / "exp", exist_ok=True)  # the same names again
    assert sorted(p.name for p in (tmp_path / "exp" / "crops" / "square").iterdir()) == ["a.jpg", "a2.jpg"]
    assert sorted(p.name for p in (tmp_path / "exp" / "crops" / "circle").iterdir()) == ["a.jpg", "a2.jpg"]
    assert len(r.crop(save=False)) == 2
    r.crop(save=True, save_dir=tmp_path / "exp")  # not exist_ok: a new run folder, as YOLOv5's
    assert (tmp_path / "exp2" / "crops" / "square" / "a.jpg").is_file()


def test_crop_keeps_a_box_outside_the_image_in_place(tmp_path):
    boxes = torch.tensor([[300.0, 300.0, 320.0, 320.0, 0.8, 0.0], [20.0, 10.0, 60.0, 50.0, 0.6, 1.0]])
    r = Detections([ImageResult(np.zeros((100, 200, 3), np.uint8), boxes, NAMES, "b.jpg")], shape=(1, 3, 64, 128))
    crops = r.crop(save=True, save_dir=tmp_path / "exp")
    assert [c["label"] for c in crops] == ["square 0.60", "circle 0.80"] and crops[1]["im"].size == 0
    assert not (tmp_path / "exp" / "crops" / "circle").exists()  # an empty crop is not written
    assert (tmp_path / "exp" / "crops" / "square" / "b.jpg").is_file()


def test_save_increments_and_keeps_same_named_files(tmp_path):
    r = _results()
    d1, d2 = r.save(save_dir=tmp_path / "exp"), r.save(save_dir=tmp_path / "exp")
    assert (d1.name, d2.name) == ("exp", "exp2") and sorted(p.name for p in d1.iterdir()) == ["a.jpg", "image1.jpg"]
    r.save(save_dir=d1, exist_ok=True)
    assert sorted(p.name for p in d1.iterdir()) == ["a.jpg", "a2.jpg", "image1.jpg", "image12.jpg"]
    assert r.save(False, tmp_path / "plain").name == "plain"  # YOLOv5's positional order: labels, save_dir
    assert r.save(tmp_path / "old").name == "old"  # this API's earlier save(dir) still works


def test_tolist_gives_complete_one_image_results():
    parts = _results().tolist()
    assert [len(p) for p in parts] == [1, 1] and parts[0].files == ["a.jpg"] and parts[1].files == ["image1.jpg"]
    assert parts[0].s == (2, 3, 128, 224) and parts[0].t == (1.0, 3.0, 0.5)  # the batch's shape, per-image ms
    assert torch.equal(parts[0].pred[0], _results().pred[0]) and parts[1].pred[0].shape == (0, 6)
    assert parts[0].ims[0][0, 0].tolist() == BLUE_RGB and str(parts[1]).startswith("image 1/1: 50x50 (no detections)")


def test_show_without_a_display_warns(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    _results().show()
    assert "needs a display" in caplog.text


def test_pil_image_file_names_the_result(tmp_path):
    Image.fromarray(scene()).save(tmp_path / "pic.png")
    with Image.open(tmp_path / "pic.png") as im:
        ((arr, path),) = as_image_list(im)
    assert path == str(tmp_path / "pic.png") and arr[20, 40].tolist() == [0, 0, 255]  # BGR red
    assert as_image_list(Image.fromarray(scene()))[0][1] == ""  # an in-memory PIL image has no name


def test_detector_takes_yolov5s_size_conf_and_iou():
    det = stub_detector(imgsz=(64, 64))
    r = det(scene(), size=128)  # a 60x120 image at size 128: letterboxed to 64x128
    assert r.s == (1, 3, 64, 128) and r.files == ["image0.jpg"] and len(r.t) == 3
    torch.testing.assert_close(r.pred[0][0, :4], torch.tensor([30.0, 15.0, 90.0, 45.0]), atol=1.5, rtol=0)
    det.conf, det.iou = 0.96, 0.5  # what SAHI sets before calling; the stub's one box scores 0.95
    assert det(scene()).pred[0].shape == (0, 6) and det(scene(), size=64).s == (1, 3, 32, 64)


def test_supervision_reads_our_results():
    sv = pytest.importorskip("supervision", reason="supervision is in requirements-test.txt only")
    r = _results()
    d = sv.Detections.from_yolov5(r)  # reads pred[0]: the first image
    np.testing.assert_allclose(d.xyxy, [[20.0, 10.0, 60.0, 50.0], [100.0, 20.0, 180.0, 90.0]])
    np.testing.assert_allclose(d.confidence, [0.9, 0.5])
    assert d.class_id.tolist() == [1, 0]
    live = stub_detector()(scene())  # a real call's results, not hand-built ones
    d = sv.Detections.from_yolov5(live)
    np.testing.assert_allclose(d.xyxy, live.xyxy[0][:, :4].numpy())
    np.testing.assert_allclose(d.xyxy, [[30.0, 15.0, 90.0, 45.0]], atol=2.5)  # the red rectangle, original pixels
    assert d.class_id.tolist() == [1] and d.confidence == pytest.approx([0.95])
