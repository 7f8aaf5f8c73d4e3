"""Python API: every input type gives the same detections, boxes land in original pixels, TTA maps views back."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.fixtures_api import BrightBoxBackend, scene, stub_detector
from tests.fixtures_models import MICRO_NAMES, save_micro_checkpoint
from utils.core.errors import UserError
from utils.inference.api import ImageResult, load_model, tta_forward


def test_boxes_come_back_in_original_pixels() -> None:
    det = stub_detector()
    r = det(scene())  # 60x120 -> letterboxed 32x64: scale 64/120, no padding needed with auto
    assert r.shape == (1, 3, 32, 64)
    assert len(r) == 1 and len(r[0]) == 1
    torch.testing.assert_close(r[0].xyxy[0], torch.tensor([30.0, 15.0, 90.0, 45.0]), atol=2.5, rtol=0)
    assert r[0].cls.tolist() == [1.0] and abs(r[0].conf.item() - 0.95) < 1e-6


def test_mixed_sizes_batch_with_padding() -> None:
    det = stub_detector(imgsz=(96, 96))
    ims = [scene(), scene(90, 50, (10, 20, 40, 70))]  # different shapes: both padded to the full 96x96
    r = det(ims)
    assert r.shape == (2, 3, 96, 96)
    torch.testing.assert_close(r[0].xyxy[0], torch.tensor([30.0, 15.0, 90.0, 45.0]), atol=2.0, rtol=0)
    torch.testing.assert_close(r[1].xyxy[0], torch.tensor([10.0, 20.0, 40.0, 70.0]), atol=2.0, rtol=0)


def test_input_types_agree(tmp_path: Path) -> None:
    from PIL import Image

    det, rgb = stub_detector(), scene()
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    inputs = [
        rgb,
        np.ascontiguousarray(rgb[..., ::-1]),
        Image.fromarray(rgb),
        torch.from_numpy(rgb).permute(2, 0, 1),
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
        str(path),
        path,
    ]
    bgr_flags = [False, True, False, False, False, False, False]
    want = det(rgb)[0].boxes
    for im, bgr in zip(inputs, bgr_flags):
        torch.testing.assert_close(det(im, bgr=bgr)[0].boxes, want)
    assert det([str(path)])[0].path == str(path)
    assert len(det(torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2))) == 2  # (B,3,H,W) batch
    # A BGR array passed as RGB swaps red and blue: the red box is no longer found where it was.
    with pytest.raises(RuntimeError):
        det(np.ascontiguousarray(rgb[..., ::-1]))


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    det = stub_detector()
    with pytest.raises(UserError, match="not found"):
        det(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.raises(UserError, match="not a readable image"):
        det(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match="expected HxWx3"):
        det(np.zeros((4, 5, 6, 7), np.uint8))
    with pytest.raises(UserError, match="no images"):
        det([])


def test_tta_views_map_back_to_the_same_box() -> None:
    be = BrightBoxBackend()
    x = torch.zeros(1, 3, 64, 96)
    x[:, 0, 10:40, 20:50] = 1.0  # box x 20..50, y 10..40
    pred = tta_forward(be, x)
    assert pred.shape == (1, 3, 7)  # one prediction per view: scales 1, 0.83 (flipped), 0.67
    for row in pred[0]:  # each de-scaled / un-flipped view agrees with the truth to within the resize blur
        torch.testing.assert_close(row[:4], torch.tensor([35.0, 25.0, 30.0, 30.0]), atol=2.0, rtol=0)


class ModelBackend(torch.nn.Module):
    """A built Model behind DetectBackend's interface (forward -> decoded pred only, stride as an int)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.stride = model, int(model.stride.max())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def grey_padded(x: torch.Tensor, n: int, size: int = 64) -> torch.Tensor:
    """x resized to n x n and padded right / bottom to size with YOLOv5's grey 0.447, computed independently."""
    x = torch.nn.functional.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
    return torch.nn.functional.pad(x, [0, size - n, 0, size - n], value=0.447)


def test_tta_keeps_every_level_of_every_view() -> None:
    """With a real model: each view is resized and grey-padded to the stride, and its predictions of every level (no
    level dropped, unlike YOLOv5's Model TTA) come back de-scaled, the flipped view mirrored back."""
    from models.yolo import Model
    from tests.fixtures_models import micro_cfg

    torch.manual_seed(0)
    model = Model(micro_cfg()).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tta = tta_forward(ModelBackend(model), x)
        full = model(x)[0]
        mid = model(grey_padded(x.flip(3), 53))[0]  # 64 * 0.83 -> 53 px, padded up to 64 (the max stride 32)
        small = model(grey_padded(x, 42))[0]  # 64 * 0.67 -> 42 px
    n = 3 * (8 * 8 + 4 * 4 + 2 * 2)  # anchors x cells of P3, P4 and P5 at 64 px
    assert full.shape[1] == mid.shape[1] == small.shape[1] == n and tta.shape == (1, 3 * n, 7)
    torch.testing.assert_close(tta[:, :n], full)
    mid[..., :4] /= 0.83
    mid[..., 0] = 64 - mid[..., 0]  # the flipped view's x mirrored back
    torch.testing.assert_close(tta[:, n : 2 * n], mid, atol=1e-5, rtol=0)
    small[..., :4] /= 0.67
    torch.testing.assert_close(tta[:, 2 * n :], small, atol=1e-5, rtol=0)


def test_result_conveniences(tmp_path: Path) -> None:
    res = stub_detector()(scene())
    r = res[0]
    (line,) = r.label_lines(save_conf=True)
    cls, cx, cy, w, h, conf = map(float, line.split())
    assert cls == 1 and conf == pytest.approx(0.95, abs=1e-5)
    assert [cx, cy, w, h] == pytest.approx(r.xywhn[0].tolist(), abs=1e-5)
    assert [cx, cy, w, h] == pytest.approx([0.5, 0.5, 0.5, 0.5], abs=0.03)
    assert r.summary() == "1 b" and "1 b" in str(res)
    assert res.records() == [{"image": 0, **r.records()[0]}] and r.records()[0]["name"] == "b"
    rows = list(csv.DictReader(open(res.to_csv(tmp_path / "p.csv"))))
    assert rows[0]["name"] == "b" and float(rows[0]["xmin"]) == pytest.approx(r.xyxy[0, 0].item(), abs=1e-4)
    ((c, crop),) = r.crops()
    assert c == 1 and 60 <= crop.shape[1] <= 80 and 30 <= crop.shape[0] <= 50  # box 60x30 grown by 2% + 10 px
    plotted = r.plot()
    assert plotted.shape == r.image.shape and not np.array_equal(plotted, r.image)  # drawn on a copy
    out = res.save(tmp_path / "exp")
    assert (out / "image0.jpg").is_file() and res.save(tmp_path / "exp").name == "exp2"


def test_load_model_on_real_checkpoint(tmp_path: Path) -> None:
    pt = save_micro_checkpoint(tmp_path / "m.pt")
    model = load_model(pt, imgsz=64, conf=0.001, max_det=7)
    res = model([scene(), scene(64, 64)])
    assert model.names == MICRO_NAMES and len(res) == 2
    for r, im in zip(res, (scene(), scene(64, 64))):
        assert isinstance(r, ImageResult) and 0 < len(r) <= 7  # random weights, tiny threshold: some boxes
        assert (r.xyxy[:, [0, 2]] <= im.shape[1]).all() and (r.xyxy[:, [1, 3]] <= im.shape[0]).all()
        assert (r.xyxy >= 0).all() and set(r.cls.tolist()) <= {0.0, 1.0}
    assert set(res.times) == {"preprocess", "inference", "nms"}


def _two_image_detections():
    from utils.inference.api import Detections

    names = {0: "circle", 1: "square"}
    boxes = torch.tensor([[20.0, 10.0, 60.0, 50.0, 0.9, 1.0], [0.0, 0.0, 200.0, 100.0, 0.5, 0.0]])
    a = ImageResult(np.zeros((100, 200, 3), np.uint8), boxes, names, "a.jpg")
    b = ImageResult(np.zeros((50, 50, 3), np.uint8), torch.zeros(0, 6), names, "b.jpg")
    return Detections([a, b], times={"preprocess": 1.0, "inference": 2.0, "nms": 0.5}, shape=(2, 3, 128, 224))


def test_yolov5_hub_views_and_print(caplog):
    import logging

    res = _two_image_detections()
    assert res.n == 2 and [t.shape for t in res.xyxy] == [(2, 6), (0, 6)]
    torch.testing.assert_close(res.xywh[0][0], torch.tensor([40.0, 30.0, 40.0, 40.0, 0.9, 1.0]))
    torch.testing.assert_close(res.xyxyn[0][0], torch.tensor([0.1, 0.1, 0.3, 0.5, 0.9, 1.0]))
    torch.testing.assert_close(res.xywhn[0][1], torch.tensor([0.5, 0.5, 1.0, 1.0, 0.5, 0.0]))
    with caplog.at_level(logging.INFO, logger="yolo"):
        res.print()
    text = caplog.text
    assert "image 1/2: 100x200 1 square, 1 circle\nimage 2/2: 50x50 (no detections)\n" in text  # YOLOv5's lines
    assert "Speed: 0.5ms pre-process, 1.0ms inference, 0.2ms NMS per image at shape (2, 3, 128, 224)" in text


def test_yolov5_pandas_view():
    pytest.importorskip("pandas")  # in requirements-test.txt; optional for users
    p = _two_image_detections().pandas()
    df = p.xyxy[0]
    assert list(df.columns) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert df["name"].tolist() == ["square", "circle"] and df["class"].tolist() == [1, 0]
    assert df.iloc[0][["xmin", "ymin", "xmax", "ymax"]].tolist() == [20.0, 10.0, 60.0, 50.0]
    assert list(p.xywhn[0].columns[:4]) == ["xcenter", "ycenter", "width", "height"]
    assert p.xywhn[0]["width"].tolist() == pytest.approx([0.2, 1.0]) and len(p.xyxy[1]) == 0


def test_pandas_view_without_pandas_is_a_user_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(UserError, match="pip install pandas"):
        _two_image_detections().pandas()
