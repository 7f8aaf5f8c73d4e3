"""ultralytics/yolov5 checkpoints: converted on load (same outputs as the fp16 weights they hold), refused safely when
they pickle anything that could run code, and accepted by val.py, detect.py, train.py --weights and export.py.

No yolov5 code is used: the files are written from our own Model, its module tree mirrored into stand-in classes that
carry yolov5's names (models.yolo.DetectionModel, models.common.Conv, ...) and attribute layout, pickled whole and in
fp16 like yolov5's train.py does.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import pickle
import posix
import subprocess
import sys
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

import models.common
import models.yolo
from models.checkpoint import load_checkpoint, load_checkpoint_model, model_record, save_checkpoint
from models.yolo import Model
from models.yolov5_ckpt import RestrictedUnpickler, StandIn, load_yolov5
from tests.fixtures_models import CKPT_KEYS
from tests.fixtures_train import train_hyp
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.evaluation.nms import non_max_suppression

NAMES = ["circle", "rectangle", "triangle"]  # the shapes dataset's classes, so train --weights transfers everything
IMGSZ = 64


def tiny_yaml() -> dict[str, Any]:
    """models/yolov5n.yaml at width 0.125 (8..128 channels): yolov5's own layer list, built in milliseconds."""
    from utils.core.files import yaml_load

    cfg = yaml_load(ROOT / "models" / "yolov5n.yaml")
    cfg.update(nc=len(NAMES), width_multiple=0.125)
    return cfg


def random_model(seed: int) -> Model:
    """A tiny yolov5n with random weights and non-trivial BatchNorm statistics (eval mode); a fresh copy per call."""
    return copy.deepcopy(_random_model(seed))


@functools.cache
def _random_model(seed: int) -> Model:
    torch.manual_seed(seed)
    model = Model(tiny_yaml())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(7)
    return model.eval()


# ------------------------------------------------------------------------------------ writing yolov5-style files
def stand_in(module: str, name: str) -> type:
    return type(name, (), {"__module__": module, "__qualname__": name})


class Y5Classes:
    """Stand-in classes named as yolov5 names its layers; `install` makes pickle find them under those names."""

    LAYERS = {
        "Conv": "models.common",
        "C3": "models.common",
        "Bottleneck": "models.common",
        "SPPF": "models.common",
        "Concat": "models.common",
        "Detect": "models.yolo",
    }

    def __init__(self, model_class: str = "DetectionModel") -> None:
        self.model_class = model_class
        self.by_name = {n: stand_in(m, n) for n, m in self.LAYERS.items()}
        self.by_name["Model"] = stand_in("models.yolo", model_class)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for _name, cls in self.by_name.items():
            target = models.yolo if cls.__module__ == "models.yolo" else models.common
            monkeypatch.setattr(target, cls.__qualname__, cls, raising=False)


def mirror(m: nn.Module, classes: Y5Classes, memo: dict[int, Any]) -> Any:
    """A copy of our module tree laid out as yolov5 pickles it: our layer classes become yolov5-named stand-ins with
    the same __dict__, torch.nn modules stay, shared modules (Conv's one SiLU) stay shared."""
    if id(m) in memo:
        return memo[id(m)]
    if type(m).__module__.startswith("torch.nn"):
        out = copy.copy(m)
    else:
        cls = classes.by_name[type(m).__name__]
        out = cls.__new__(cls)
        out.__dict__.update(m.__dict__)
    memo[id(m)] = out
    out.__dict__["_modules"] = OrderedDict((k, mirror(c, classes, memo)) for k, c in m._modules.items())
    return out


def yolov5_layout(model: Model, classes: Y5Classes) -> Any:
    """The yolov5 attributes that differ from ours: names a list, yaml without our yaml_file, row types with module
    paths, Detect's stride a plain attribute (not a buffer) and its grid lists."""
    h = copy.deepcopy(model).half()  # yolov5's train.py saves deepcopy(model).half()
    net = mirror(h, classes, {})
    yaml = dict(net.yaml)
    net.yaml_file = yaml.pop("yaml_file", "yolov5n.yaml")
    net.__dict__.update(
        yaml=yaml,
        names=list(NAMES),
        nc=len(NAMES),
        inplace=True,
        hyp={"lr0": 0.01},
        class_weights=torch.ones(len(NAMES)).half(),
        stride=h.stride.clone(),
    )
    for row in net._modules["model"]._modules.values():
        kind = row.__dict__["type"]
        row.__dict__["type"] = f"{Y5Classes.LAYERS.get(kind, 'torch.nn.modules.upsampling')}.{kind.split('.')[-1]}"
    det = net._modules["model"]._modules[str(len(net._modules["model"]._modules) - 1)]
    stride = det._buffers.pop("stride")
    det.__dict__["_non_persistent_buffers_set"] = set()
    for k in ("_grids", "strides_known"):
        det.__dict__.pop(k, None)
    det.__dict__.update(stride=stride, grid=[torch.empty(0)] * 3, anchor_grid=[torch.empty(0)] * 3, inplace=True)
    return net


def save_yolov5(
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: Model,
    ema: Model | None = None,
    model_class: str = "DetectionModel",
    edit: Any = None,
    **extra: Any,
) -> Path:
    """torch.save a checkpoint in yolov5 train.py's dict layout; edit(net) may change the pickled tree first."""
    classes = Y5Classes(model_class)
    net = yolov5_layout(model, classes)
    if edit:
        edit(net)
    ckpt = {
        "epoch": -1,
        "best_fitness": None,
        "model": net,
        "ema": yolov5_layout(ema, classes) if ema else None,
        "updates": None,
        "optimizer": None,
        "opt": {"epochs": 3, "save_dir": "runs/train/exp"},
        "git": {"commit": "abc"},
        "date": "2024-01-01T00:00:00",
        **extra,
    }
    with monkeypatch.context() as mp:
        classes.install(mp)
        torch.save(ckpt, path)
    return path


def reference(model: Model) -> Model:
    """Our model carrying the same fp16-rounded tensors as the yolov5 file."""
    return copy.deepcopy(model).half().float().eval()


@pytest.fixture(scope="module")
def y5(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A stripped yolov5-style file (like a released yolov5s.pt) and the reference model it must load as."""
    model = random_model(0)
    path = tmp_path_factory.mktemp("y5") / "y5.pt"
    with pytest.MonkeyPatch.context() as mp:
        save_yolov5(path, mp, model)
    return {"path": path, "ref": reference(model)}


def eval_pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


# ------------------------------------------------------------------------------------------------ conversion
def test_stripped_file_loads_with_the_same_outputs(y5: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    data = _pickle_bytes(y5["path"])  # sanity: whole module objects are pickled, under yolov5's class names
    assert all(
        g in data
        for g in (
            b"cmodels.yolo\nDetectionModel\n",
            b"cmodels.common\nC3\n",
            b"ctorch.nn.modules.conv\nConv2d\n",
            b"HalfStorage",
        )
    )
    with pytest.raises(pickle.UnpicklingError):
        torch.load(y5["path"], weights_only=True)  # ... which the safe loader refuses: the import path is needed
    ckpt = load_checkpoint(y5["path"])
    assert f"converted from ultralytics/yolov5 checkpoint {y5['path']}" in caplog.text
    assert set(ckpt) == CKPT_KEYS and ckpt["epoch"] == -1 and ckpt["ema"] is None and ckpt["optimizer"] is None
    rec = ckpt["model"]
    assert rec["names"] == dict(enumerate(NAMES)) and rec["nc"] == 3 and rec["stride"] == [8.0, 16.0, 32.0]
    assert set(rec["state_dict"]) == set(y5["ref"].state_dict())  # yolov5's key names are ours
    assert "model.24.anchors" in rec["state_dict"] and "model.24.stride" not in rec["state_dict"]
    model = load_checkpoint_model(y5["path"])
    x = torch.rand(2, 3, IMGSZ, IMGSZ + 32, generator=torch.Generator().manual_seed(1))
    got, want = eval_pred(model, x), eval_pred(y5["ref"], x)
    assert got.dtype == torch.float32 and got.shape == want.shape == (2, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
    assert (got - want).abs().max().item() <= 1e-4
    boxes = non_max_suppression(got, conf_thres=0.001, iou_thres=0.6)
    ref_boxes = non_max_suppression(want, conf_thres=0.001, iou_thres=0.6)
    assert sum(len(b) for b in boxes) > 0
    assert all(torch.allclose(b, r, atol=1e-4) for b, r in zip(boxes, ref_boxes))
    assert not torch.equal(got, eval_pred(random_model(1), x))  # the weights matter: another model differs


def test_ema_is_preferred_and_numpy_best_fitness_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, ema = random_model(0), random_model(1)
    path = save_yolov5(
        tmp_path / "last.pt",
        monkeypatch,
        model,
        ema=ema,
        epoch=4,
        updates=40,
        best_fitness=np.array([0.25]),
        optimizer={"state": {}, "param_groups": [{"lr": 0.01}]},
    )
    imported = load_yolov5(path)
    assert imported.which == "ema" and imported.epoch == 4 and imported.best_fitness == 0.0
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    assert (eval_pred(imported.model, x) - eval_pred(reference(ema), x)).abs().max().item() <= 1e-4
    assert load_checkpoint(path)["epoch"] == -1  # converted as finished: its optimizer is yolov5's, not ours


def test_old_model_class_name_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = random_model(1)
    path = save_yolov5(tmp_path / "old.pt", monkeypatch, model, model_class="Model")
    assert b"cmodels.yolo\nModel\n" in _pickle_bytes(path) and b"DetectionModel" not in _pickle_bytes(path)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    assert (eval_pred(load_checkpoint_model(path), x) - eval_pred(reference(model), x)).abs().max().item() <= 1e-4


def _pickle_bytes(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _row(net: Any, i: int) -> Any:
    return net._modules["model"]._modules[str(i)]


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda net: net.yaml.update(nc=4),
            r"6 of another shape \(e\.g\. model\.24\.m\.0\.weight: \(24, 32, 1, 1\) "
            r"in the file, \(27, 32, 1, 1\) here\)",
        ),
        (lambda net: _row(net, 0)._modules.pop("bn"), r"5 missing \(e\.g\. model\.0\.bn\.weight\)"),  # a fused file
        (
            lambda net: _row(net, 0)._modules.update(act=nn.LeakyReLU(0.1)),
            "layer model.0.act is LeakyReLU in the file but SiLU here",
        ),
        (
            lambda net: _row(net, 11).__dict__.update(mode="bilinear"),
            r"layer model.11 \(Upsample\) has mode='bilinear' in the file but 'nearest' here",
        ),
        (lambda net: _row(net, 12).__dict__.update(f=[-1, 4]), r"layer model.12 \(Concat\) has f=\[-1, 4\]"),
        (lambda net: net.__dict__.update(stride=torch.tensor([8.0, 16.0, 64.0])), "strides"),
    ],
)
def test_a_file_that_does_not_fit_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, match: str
) -> None:
    path = save_yolov5(tmp_path / "bad.pt", monkeypatch, random_model(0), edit=edit)
    with pytest.raises(UserError, match=match) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_layer_this_project_does_not_build_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def focus(net: Any) -> None:
        net.yaml["backbone"][0] = [-1, 1, "Focus", [64, 3]]  # yolov5 v5's first layer

    path = save_yolov5(tmp_path / "focus.pt", monkeypatch, random_model(0), edit=focus)
    with pytest.raises(UserError, match="cannot be built here: .*unknown module 'Focus'"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------ refusing payloads
class Payload:
    """An object whose unpickling calls fn(*args) (what a malicious .pt does)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args


def _os_system_proxy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """os.system pickles as posix.system; a proxy named os.system (installed only while saving) writes 'os system',
    which unpickles to the real os.system."""
    real = os.system

    def system(cmd: str) -> int:
        return real(cmd)

    system.__module__, system.__qualname__ = "os", "system"
    monkeypatch.setattr(os, "system", system)
    return system


def _payloads(marker: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Any, bool]]:
    """{case: (object to pickle, whether unpickling it for real runs code)}."""

    class EvilThing:  # a yolov5-looking class whose pickle calls a command
        def __reduce__(self) -> tuple:
            return subprocess.check_call, (["touch", str(marker)],)

    EvilThing.__module__, EvilThing.__qualname__ = "models.yolo", "EvilThing"
    return {
        "os.system": (Payload(_os_system_proxy(monkeypatch), f"touch {marker}"), True),
        "builtins.eval": (Payload(eval, f"open({str(marker)!r}, 'w').close()"), True),
        "posix.system": (Payload(posix.system, f"touch {marker}"), True),
        "subprocess.check_call": (EvilThing(), True),
        "collections.Counter": (Counter(a=1), False),  # harmless, but not something a checkpoint needs
    }


@pytest.mark.parametrize(
    "case", ["os.system", "builtins.eval", "posix.system", "subprocess.check_call", "collections.Counter"]
)
def test_code_in_the_pickle_is_refused_and_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"{case}.pt"
    with monkeypatch.context() as mp:
        obj, runs = _payloads(marker, mp)[case]
        save_yolov5(path, mp, random_model(0), opt={"payload": obj})  # inside a yolov5 layout: past weights_only
    with pytest.raises(UserError, match=rf"refused to load — it pickles {case}, which is neither") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(UserError, match=f"pickles {case}"):  # the unpickler itself, without weights_only first
        load_yolov5(path)
    assert not marker.exists()
    if runs:  # the control: the payload is live, a plain unpickling (layer classes importable) runs it
        with monkeypatch.context() as mp:
            Y5Classes().install(mp)
            torch.load(path, weights_only=False)
        assert marker.exists()


def test_a_bare_payload_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(os.system, f"touch {marker}")}, path)
    with pytest.raises(UserError, match="refused to load — it pickles posix.system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_stand_ins_are_inert(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    conv = stand_in("models.common", "Conv")
    monkeypatch.setattr(models.common, "Conv", conv)
    data = pickle.dumps(Payload(conv, "x"), protocol=2)  # the pickle calls a layer class with arguments
    obj = RestrictedUnpickler(io.BytesIO(data)).load()
    assert isinstance(obj, StandIn) and obj.pickled_as == "models.common.Conv" and obj.args == ("x",)
    assert [n for n in vars(type(obj)) if not n.startswith("__")] == ["pickled_as"]  # no behaviour of its own


def test_pickle_cannot_rewrite_an_allowed_function() -> None:
    """BUILD aimed at an allowed function (here: set its __defaults__) is refused, so a file cannot change torch's
    tensor rebuilding for later loads."""
    before = torch._utils._rebuild_tensor_v2.__defaults__
    data = b"ctorch._utils\n_rebuild_tensor_v2\n(dS'__defaults__'\nNsb."  # protocol 0: GLOBAL, {...}, BUILD
    with pytest.raises(Exception, match="writes state onto the function _rebuild_tensor_v2"):
        RestrictedUnpickler(io.BytesIO(data)).load()
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:FutureWarning",
    "ignore:'torch.load' received a zip file that looks like a TorchScript:UserWarning",
)
def test_legacy_and_torchscript_files_are_not_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, y5: dict[str, Any]
) -> None:
    legacy = tmp_path / "legacy.pt"
    classes, model = Y5Classes(), random_model(0)
    with monkeypatch.context() as mp:
        classes.install(mp)
        torch.save({"model": yolov5_layout(model, classes)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(legacy)
    with pytest.raises(UserError, match="legacy format"):
        load_yolov5(legacy)
    ts = tmp_path / "model.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(ts))
    with pytest.raises(UserError, match="TorchScript archive"):
        load_yolov5(ts)  # never handed to torch.jit.load, which would run the code it holds
    with pytest.raises(UserError, match="not a readable checkpoint of this project"):
        load_checkpoint(ts)


# ---------------------------------------------------------------------------------------------- the scripts
def _our_copy(y5: dict[str, Any], tmp_path: Path) -> Path:
    """The reference model saved as our own checkpoint: what every script must treat the yolov5 file like."""
    ref = y5["ref"]
    ref.names = dict(enumerate(NAMES))
    return save_checkpoint({"epoch": -1, "model": model_record(ref), "ema": None}, tmp_path / "ours.pt")


def test_val_cli_and_detect_match_our_checkpoint(y5: dict[str, Any], shapes_yaml: Path, tmp_path: Path) -> None:
    import detect
    import val

    ours = _our_copy(y5, tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "val.py"),
            "--weights",
            str(y5["path"]),
            "--data",
            str(shapes_yaml),
            "--imgsz",
            str(IMGSZ),
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--project",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count(f"converted from ultralytics/yolov5 checkpoint {y5['path']}") == 1
    want = val.run(
        weights=str(ours),
        data=str(shapes_yaml),
        imgsz=IMGSZ,
        batch_size=16,
        device="cpu",
        workers=0,
        plots=False,
        project=str(tmp_path / "val"),
    )[0][:4]  # P, R, mAP50, mAP50-95
    summary = next(line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["all"])
    assert summary[3:7] == [f"{v:.3g}" for v in want]  # the CLI prints them with %.3g
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted((Path(shapes_yaml).parent / "shapes" / "images" / "val").iterdir())[:4]:
        os.link(f, images / f.name)
    kw = dict(
        source=str(images), imgsz=IMGSZ, conf_thres=0.001, device="cpu", nosave=True, project=str(tmp_path / "detect")
    )
    a, b = detect.run(weights=str(y5["path"]), **kw)["frames"], detect.run(weights=str(ours), **kw)["frames"]
    assert len(a) == len(b) == 4 and sum(len(f["boxes"]) for f in a) > 0
    assert all(torch.allclose(f["boxes"], g["boxes"], atol=1e-3) for f, g in zip(a, b))


def test_train_starts_from_a_yolov5_file_and_resume_refuses_it(
    y5: dict[str, Any], shapes_yaml: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import train

    r = train.run(
        weights=str(y5["path"]),
        cfg="",
        data=str(shapes_yaml),
        hyp=train_hyp(),
        epochs=1,
        batch_size=16,
        imgsz=IMGSZ,
        device="cpu",
        workers=0,
        project=str(tmp_path),
        name="ft",
        noplots=True,
        noval=True,
    )
    n = len(y5["ref"].state_dict())
    assert f"Transferred {n}/{n} items from {y5['path']}" in caplog.text and Path(r["best"]).is_file()
    assert load_checkpoint(r["best"])["model"]["yaml"]["backbone"] == tiny_yaml()["backbone"]
    with pytest.raises(UserError, match="finished run .* --weights"):
        train.run(resume=str(y5["path"]), device="cpu", workers=0)


def test_export_pt_writes_our_plain_checkpoint(y5: dict[str, Any], tmp_path: Path) -> None:
    import export

    if "pt" not in export.FORMATS:
        pytest.skip("export.py --include pt is not there yet")
    src = tmp_path / "y5.pt"
    src.write_bytes(y5["path"].read_bytes())
    f = export.run(weights=str(src), include=("pt",), imgsz=IMGSZ)["pt"]
    ckpt = torch.load(f, map_location="cpu", weights_only=True)  # plain data: loads without running anything
    assert ckpt["epoch"] == -1 and ckpt["model"]["names"] == dict(enumerate(NAMES))
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    assert torch.equal(eval_pred(load_checkpoint_model(f), x), eval_pred(load_checkpoint_model(src), x))
