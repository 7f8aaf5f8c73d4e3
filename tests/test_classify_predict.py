"""Classifier inference: the Python API against the model's own logits, classify/predict.py on a folder with a
corrupt image, classify/val.py, torch.hub custom, exports (TorchScript, ONNX, OpenVINO) against PyTorch, and the
shipped ImageNet class names."""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import export
import hubconf
from classify import predict as cls_predict
from classify import val as cls_val
from models.checkpoint import load_checkpoint_model, new_checkpoint, save_checkpoint
from models.classifier import ClassificationModel, backbone_identity
from utils.core.errors import UserError
from utils.core.files import ROOT, yaml_load
from utils.core.image_io import imread
from utils.inference import classify_api
from utils.inference.api import Detector
from utils.inference.classify_api import Classifier, imagenet_names, load_classifier


def _images(cls_data, n=4):
    return sorted((cls_data / "val").rglob("*.jpg"))[:n]


def test_api_probabilities_are_the_softmax_of_the_models_logits(cls_run, cls_data):
    clf = load_classifier(cls_run.best)
    files = _images(cls_data)
    res = clf([str(f) for f in files])
    assert clf.imgsz == 32 and clf.names == {0: "circle", 1: "rectangle", 2: "triangle"}
    model = load_checkpoint_model(cls_run.best)
    x = clf.preprocess([imread(f) for f in files])
    with torch.no_grad():
        want = F.softmax(model(x), 1)
    for r, p in zip(res, want):
        assert torch.allclose(r.probs, p, atol=1e-6)
        assert r.top5 == p.argsort(descending=True).tolist() and r.top1 == int(p.argmax())
        assert r.top5conf == sorted(r.top5conf, reverse=True) and sum(r.top5conf) == pytest.approx(1, abs=1e-5)
        assert r.label_lines()[0] == f"{float(p.max()):.2f} {clf.names[int(p.argmax())]}"
        assert r.plot().shape == r.image.shape and not np.array_equal(r.plot(), r.image)  # drawn on a copy


def test_predict_folder_with_a_corrupt_image(cls_run, cls_data, tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    for f in _images(cls_data, 3):  # 48x40 copies: the log shows the network's 32x32, the saved copies keep 48x40
        cv2.imwrite(str(src / f.name), cv2.resize(imread(f), (48, 40)))
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = cls_predict.run(weights=str(cls_run.best), source=str(src), save_txt=True, project=str(tmp_path), name="p")
    assert len(out["frames"]) == 3 and caplog.text.count("broken.jpg") == 1
    # YOLOv5's line per image: index/count, path, the network's input size, the top 5 with probabilities, the time
    logged = [ln for ln in caplog.text.splitlines() if "image 1/4 " in ln]
    assert len(logged) == 1 and re.search(r": 32x32 (circle|rectangle|triangle) [01]\.\d\d, .+, [\d.]+ms$", logged[0])
    d = out["save_dir"]
    assert sorted(p.name for p in d.glob("*.jpg")) == sorted(p.name for p in src.glob("0*.jpg"))
    drawn, orig = imread(next(d.glob("0*.jpg"))), imread(src / next(d.glob("0*.jpg")).name)
    assert drawn.shape == orig.shape == (40, 48, 3) and np.abs(drawn.astype(int) - orig).max() > 100  # text drawn
    lines = (d / "labels" / f"{_images(cls_data, 1)[0].stem}.txt").read_text().splitlines()
    assert len(lines) == 3 and {ln.split()[1] for ln in lines} == {"circle", "rectangle", "triangle"}
    assert sum(float(ln.split()[0]) for ln in lines) == pytest.approx(1, abs=0.02)


def test_val_top1_is_the_argmax_accuracy(cls_run, cls_data):
    clf = load_classifier(cls_run.best)
    files = sorted((cls_data / "val").rglob("*.jpg"))
    names = {v: k for k, v in clf.names.items()}
    hits = [r.top1 == names[f.parent.name] for r, f in zip(clf([str(f) for f in files]), files)]
    m = cls_val.run(data=str(cls_data), weights=str(cls_run.best), device="cpu", workers=0, plots=False)
    assert m.images == len(files) and m.top1 == pytest.approx(sum(hits) / len(files))
    assert m.confusion.sum() == len(files) and m.top5 == 1.0  # three classes: every label is in the top 5


def test_hub_custom_returns_a_classifier_or_a_detector(cls_run, micro_pt):
    assert isinstance(hubconf.custom(str(cls_run.best), _verbose=False), Classifier)
    assert isinstance(hubconf.custom(str(micro_pt), _verbose=False), Detector)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "openvino"])
def test_export_matches_pytorch(fmt, cls_run, cls_data, tmp_path):
    w = tmp_path / "best.pt"
    w.write_bytes(cls_run.best.read_bytes())
    f = export.run(weights=w, include=[fmt])[fmt]  # a classifier exports at its training size
    ref, clf = load_classifier(w), load_classifier(f)
    assert clf.backend.task == "classify" and clf.imgsz == ref.imgsz == 32 and clf.names == ref.names
    x = ref.preprocess([imread(p) for p in _images(cls_data)])
    want, got = ref.logits(x), clf.logits(x)
    # fp32 graphs: only summation order differs (measured max |diff| ~3e-7 on logits of size ~1)
    assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))


def test_imagenet_names_ship_and_name_a_1000_class_model(tmp_path):
    names = imagenet_names()
    assert len(names) == 1000 and len(set(names.values())) == 1000
    assert (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet tissue")
    assert yaml_load(ROOT / "data" / "ImageNet.yaml")["val"] == "val"
    m = ClassificationModel("convnext_atto", nc=1000)  # numeric names: an ImageNet head of unknown origin
    f = save_checkpoint(new_checkpoint(-1, 0.0, m, None, 0, None, None, {}, {}), tmp_path / "in1k.pt")
    clf = load_classifier(f, imgsz=32)
    assert clf.names == names and clf(np.zeros((40, 40, 3), np.uint8))[0].name(0) == "tench"


def test_official_name_builds_the_imagenet_model(monkeypatch):
    """An official weights name builds the matching classifier, loads that name (stubbed here: no download), names a
    1k head with ImageNet's classes and predicts at the size the name says."""
    loaded = []
    monkeypatch.setattr(
        classify_api, "load_classifier_weights", lambda m, name: loaded.append((backbone_identity(m.yaml), m.nc, name))
    )
    clf = load_classifier("convnextv2_atto_1k")
    assert loaded == [("ConvNeXt-atto (V2)", 1000, "convnextv2_atto_1k")]
    assert clf.imgsz == 224 and clf.names == imagenet_names() and clf.nc == 1000
    r = clf(np.zeros((50, 60, 3), np.uint8))[0]
    assert r.probs.shape == (1000,) and r.name(r.top1) == imagenet_names()[r.top1]
    clf = load_classifier("convnext_tiny_22k_1k_384")
    assert loaded[-1] == ("ConvNeXt-tiny (V1)", 1000, "convnext_tiny_22k_1k_384") and clf.imgsz == 384
    clf = load_classifier("convnext_tiny_22k")  # the 21,841-class ImageNet-22k head: no shipped names, indices
    assert loaded[-1][1] == clf.nc == 21841 and clf.imgsz == 224 and clf.names[5] == "5"


def test_bad_input_is_one_line(micro_pt, cls_run, tmp_path):
    with pytest.raises(UserError, match="is a detector"):
        load_classifier(micro_pt)
    with pytest.raises(UserError, match="not found"):
        load_classifier(tmp_path / "none.pt")
    cmd = [sys.executable, str(ROOT / "classify" / "predict.py"), "--weights", str(cls_run.best), "--source",
           str(tmp_path / "nothing.jpg")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
