"""torch.hub entry points (hubconf.py), offline, and detect.py's shipped sample images (data/images)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import detect
from data.scripts.make_shapes import SAMPLES_DIR, _demo_scene, generate_samples
from models.checkpoint import load_checkpoint_model as load_pt_model
from models.yolo import Model
from tests.fixtures_models import MICRO_CFG, random_official_v2
from tests.reference_conv2former import classifier_shapes, official_shapes, random_official_state
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.core.log import LOGGER
from utils.inference.api import Detector, load_model

ENTRIES = ["custom", "yolov5_conv2former", "yolov5_convnext", "yolov5l", "yolov5m", "yolov5n", "yolov5s", "yolov5x"]
SAMPLE = SAMPLES_DIR / "shapes_1.jpg"
LOW_CONF = 0.005  # the untrained micro model's scores sit near 0.008: this keeps dozens of real boxes to compare


class NetworkUsed(AssertionError):
    pass


class RunsCode:
    """Pickles as a call of pathlib.Path.touch: a checkpoint that runs code when loaded by plain unpickling."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or DNS lookup (a github fetch, a weights download) fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network use: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", refuse)  # what source='github' would call


def hub(entry: str, *args, **kwargs):
    return torch.hub.load(str(ROOT), entry, *args, source="local", _verbose=False, **kwargs)


def test_network_guard_is_active() -> None:
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_entry_points_are_exactly_the_models() -> None:
    """torch.hub offers every public callable of hubconf: helpers and imported names must not show up."""
    spec = importlib.util.spec_from_file_location("hubconf_listed", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")) == ENTRIES
    assert {"torch", "yaml", "cv2"} <= set(module.dependencies)


def test_custom_gives_the_api_detector(micro_pt: Path) -> None:
    model = hub("custom", path=str(micro_pt), conf=LOW_CONF, imgsz=256, device="cpu")
    ref = load_model(micro_pt, device="cpu", conf=LOW_CONF, imgsz=256)
    assert isinstance(model, Detector) and model.conf == LOW_CONF and model.names == {0: "circle", 1: "square"}
    bgr = cv2.imread(str(SAMPLE))
    want = ref(str(SAMPLE))[0].boxes
    assert len(want) > 10
    for im, kw in ((str(SAMPLE), {}), (bgr, {"bgr": True}), (Image.open(SAMPLE), {})):
        torch.testing.assert_close(model(im, **kw)[0].boxes, want, rtol=0, atol=1e-4)
    assert (want[:, 5] == 1).sum() >= 3 and (want[:, 5] == 0).sum() >= 3
    only1 = hub("custom", str(micro_pt), conf=LOW_CONF, classes=[1], max_det=3, imgsz=256)(bgr, bgr=True)[0]
    assert len(only1) == 3 and set(only1.cls.tolist()) == {1.0}  # the hub options reached the Detector's NMS


def test_custom_autoshape_false_is_the_bare_model(micro_pt: Path) -> None:
    model = hub("custom", str(micro_pt), autoshape=False, device="cpu")
    assert type(model) is Model and not model.training
    ref, x = load_pt_model(micro_pt), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x)[0])
    with pytest.raises(UserError, match=r"autoshape=False\): the bare model needs a \.pt"):
        hub("custom", str(micro_pt.with_suffix(".onnx")), autoshape=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"conf": 2.0}, r"custom\(conf=2.0\): must be a number in \[0, 1\]"),
        ({"iou": "high"}, r"custom\(iou='high'\)"),
        ({"max_det": 0}, r"custom\(max_det=0\): must be a whole number >= 1"),
        ({"classes": [0, -1]}, r"custom\(classes=\[0, -1\]\)"),
        ({"device": "gpu"}, r"gpu"),
    ],
)
def test_custom_bad_options_are_one_line_errors(micro_pt: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        hub("custom", str(micro_pt), **kwargs)
    assert "\n" not in str(e.value)


def test_custom_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="weights file not found"):
        hub("custom", str(tmp_path / "none.pt"))
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": RunsCode(str(marker))}, evil)  # unpickling it the ordinary way would create marker
    with pytest.raises(UserError) as e:
        hub("custom", str(evil))
    assert "\n" not in str(e.value) and not marker.exists()


def test_yolov5_convnext_builds_untrained_model() -> None:
    model = hub("yolov5_convnext", nc=3)
    assert type(model) is Model and model.nc == 3 and model.model[-1].nc == 3
    assert model.yaml["yaml_file"] == "yolov5_ConvNeXt.yaml" and model.yaml["convnext"]["size"] == "tiny"
    with torch.no_grad():
        pred = model.eval()(torch.rand(1, 3, 64, 64))[0]
    assert pred.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 5 + 3)


def test_yolov5_convnext_size_channels_and_backbone_weights(tmp_path: Path) -> None:
    sd = random_official_v2([2, 2, 6, 2], [40, 80, 160, 320])
    torch.save(sd, tmp_path / "atto.pth")
    model = hub("yolov5_convnext", size="atto", version=2, nc=2, backbone_weights=str(tmp_path / "atto.pth"))
    assert model.yaml["yaml_file"] == "yolov5_ConvNeXtV2-atto.yaml" and model.nc == 2
    assert any(torch.equal(p, sd["stages.2.5.pwconv2.weight"]) for p in model.parameters())  # copied in, not init
    grey = hub("yolov5_convnext", size="atto", version=2, channels=1).eval()
    with torch.no_grad():
        assert grey(torch.rand(1, 1, 64, 64))[0].shape == (1, 252, 85)
    with pytest.raises(UserError, match="give either cfg or size/version"):
        hub("yolov5_convnext", cfg="yolov5_ConvNeXt.yaml", size="atto")
    with pytest.raises(UserError, match="ConvNeXt versions are 1 and 2"):
        hub("yolov5_convnext", version=3)


def test_yolov5_conv2former_sizes_cfg_and_backbone_weights(tmp_path: Path) -> None:
    model = hub("yolov5_conv2former", size="n", nc=3)
    assert type(model) is Model and model.training and model.nc == 3
    assert model.yaml["yaml_file"] == "yolov5_Conv2Former-n.yaml" and model.model[0].kernel_size == 7
    cfg = {k: v for k, v in MICRO_CFG.items() if k != "convnext"}
    cfg["conv2former"] = {"kernel_size": 3, "depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]}
    cfg["backbone"] = [[-1, 1, "Conv2Former_Block", [s]] for s in range(4)]
    (tmp_path / "c2f.yaml").write_text(yaml.safe_dump(cfg))
    sd = random_official_state(official_shapes([1, 1, 1, 1], [16, 32, 64, 128], 3) | classifier_shapes(128))
    torch.save({"epoch": 9, "state_dict": sd, "state_dict_ema": sd}, tmp_path / "c2f.pth.tar")
    micro = hub("yolov5_conv2former", cfg=str(tmp_path / "c2f.yaml"), backbone_weights=str(tmp_path / "c2f.pth.tar"))
    assert torch.equal(micro.model[2].blocks[0].attn.att[2].weight, sd["stages.2.0.attn.att.2.weight"])  # copied in
    assert torch.equal(micro.model[0].downsample[2].running_var, sd["downsample_layers.0.2.running_var"])
    with pytest.raises(UserError, match="give either cfg or size"):
        hub("yolov5_conv2former", cfg=str(tmp_path / "c2f.yaml"), size="n")
    with pytest.raises(UserError, match=r"size='xl'\): unknown size — use one of n, t, s, b, b_22k, l"):
        hub("yolov5_conv2former", size="xl")
    with pytest.raises(UserError, match="Conv2Former weights have no download names"):
        hub("yolov5_conv2former", cfg=str(tmp_path / "c2f.yaml"), backbone_weights="conv2former_t")


def test_yolov5s_matches_model_from_yaml() -> None:
    model = hub("yolov5s")
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in Model(ROOT / "models" / "yolov5s.yaml").parameters())
    assert 7_000_000 < n < 7_400_000 and model.nc == 80  # YOLOv5s: 7.2 M parameters at 80 classes
    assert hub("yolov5n", classes=10).nc == 10  # YOLOv5's keyword for the class count
    with pytest.raises(UserError, match="two different class counts"):
        hub("yolov5n", nc=3, classes=4)


def test_verbose_false_keeps_the_log_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """torch.hub eats verbose= itself, so the entries take YOLOv5's _verbose=; the level is restored afterwards."""
    level = LOGGER.level
    hub("yolov5n", nc=3)  # hub() passes _verbose=False
    quiet = sum(r.name == LOGGER.name for r in caplog.records)
    torch.hub.load(str(ROOT), "yolov5n", nc=3, source="local")
    records = [r for r in caplog.records if r.name == LOGGER.name]
    assert quiet == 0 and LOGGER.level == level
    assert any("Overriding" in r.getMessage() for r in records) and any("summary" in r.getMessage() for r in records)


@pytest.mark.parametrize("entry", ["yolov5s", "yolov5_convnext", "yolov5_conv2former"])
def test_pretrained_and_autoshape_are_refused(entry: str) -> None:
    with pytest.raises(UserError) as e:
        hub(entry, pretrained=True)
    msg = str(e.value)
    assert f"{entry}(pretrained=True): no pretrained detection weights are shipped" in msg and "\n" not in msg
    assert "'custom', path=" in msg and "python train.py --cfg" in msg
    assert ("ultralytics' yolov5s.pt" in msg) == (entry == "yolov5s")
    with pytest.raises(UserError, match=r"autoshape=True\): an untrained model has nothing to detect"):
        hub(entry, autoshape=True)


def test_foreign_utils_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """After e.g. an ultralytics/yolov5 hub load, sys.modules['utils'] is theirs: say so instead of failing deep."""
    fake = types.ModuleType("utils")
    fake.__file__ = "/elsewhere/yolov5/utils/__init__.py"
    monkeypatch.setitem(sys.modules, "utils", fake)
    with pytest.raises(ImportError, match=r"another 'utils' package \(/elsewhere/yolov5/utils/__init__.py\)"):
        hub("yolov5n")


def test_sample_images_are_shipped_small_and_reproducible(tmp_path: Path) -> None:
    files = sorted(SAMPLES_DIR.iterdir())
    assert 2 <= len(files) <= 4 and all(f.suffix == ".jpg" for f in files)
    for f in files:
        assert f.stat().st_size < 20_000, f
        im = cv2.imread(str(f))
        assert im is not None and im.shape == (256, 256, 3), f
        assert float(im.std()) > 10, f  # a scene, not a blank image
    made = generate_samples(tmp_path, n=len(files))
    assert [p.read_bytes() for p in made] == [f.read_bytes() for f in files]  # the committed files are the generator's


def test_demo_scenes_have_separate_objects() -> None:
    apart = np.array([[0, 0.2, 0.2, 0.1, 0.1], [1, 0.5, 0.5, 0.1, 0.1], [2, 0.8, 0.8, 0.1, 0.1]])
    assert _demo_scene(apart)
    assert not _demo_scene(apart[:2])  # too few objects
    inside = apart.copy()
    inside[2, 1:] = [0.52, 0.52, 0.05, 0.05]  # a small object on a larger one, as in the busier dataset scenes
    assert not _demo_scene(inside)


def test_make_shapes_samples_cli(tmp_path: Path) -> None:
    script = ROOT / "data" / "scripts" / "make_shapes.py"
    r = subprocess.run(
        [sys.executable, str(script), "--samples", "2", "--out", str(tmp_path / "s"), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    made = sorted((tmp_path / "s").iterdir())
    assert [p.name for p in made] == ["shapes_1.jpg", "shapes_2.jpg"]
    assert made[0].read_bytes() != (SAMPLES_DIR / "shapes_1.jpg").read_bytes()  # --seed reached the generator
    with pytest.raises(UserError, match="imgsz=8 n=2 — use imgsz >= 32"):
        generate_samples(tmp_path / "t", n=2, imgsz=8)
    assert not (tmp_path / "t").exists()


def test_detect_default_source_is_the_sample_images(micro_pt: Path, tmp_path: Path) -> None:
    files = sorted(SAMPLES_DIR.iterdir())
    out = detect.run(
        weights=str(micro_pt), device="cpu", imgsz=256, conf_thres=LOW_CONF, max_det=3, project=str(tmp_path / "runs")
    )  # no source: the default
    assert out["save_dir"] == tmp_path / "runs" / "exp"
    assert [Path(f["path"]).name for f in out["frames"]] == [f.name for f in files]
    assert all(len(f["boxes"]) == 3 for f in out["frames"])
    saved = sorted((tmp_path / "runs" / "exp").iterdir())
    assert [p.name for p in saved] == [f.name for f in files]
    for p, f in zip(saved, files):
        drawn = cv2.absdiff(cv2.imread(str(p)), cv2.imread(str(f))).max(2) > 80  # JPEG re-encoding alone: none
        assert drawn.shape == (256, 256) and drawn.mean() > 0.01, p  # the three boxes and labels are on it
