"""Bad numeric / choice arguments of train, val, detect and export: one 'ERROR:' line, exit code 2, before any data
scan, model load, download or run folder; run() from Python raises the same UserError (issue #11, item 6)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import detect
import export
import train
import val
from tests.fixtures_data import write_images
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import UserError
from utils.core.files import ROOT

SHA = "ab" * 32  # a well-formed SHA-256 digest


# ------------------------------------------------------------------------------------------ the real CLIs
@pytest.mark.parametrize(
    "script,args,message",
    [
        ("train.py", ["--epochs", "0", "--project", "{tmp}/runs"], "--epochs 0: must be >= 1"),
        (
            "val.py",
            ["--img", "65", "--weights", "{pt}", "--project", "{tmp}/runs"],
            "--imgsz 65: must be a multiple of 32",
        ),
        (
            "detect.py",
            ["--conf-thres", "1.5", "--weights", "{pt}", "--source", "{tmp}/src", "--project", "{tmp}/runs"],
            "--conf-thres 1.5: must be in [0, 1]",
        ),
        ("export.py", ["--batch-size", "0", "--weights", "{pt}"], "--batch-size 0: must be >= 1"),  # was SIGFPE
    ],
)
def test_cli_bad_argument_one_line_exit_2_before_work(script, args, message, micro_pt, tmp_path):
    write_images(tmp_path / "src", n=1)
    argv = [a.format(tmp=tmp_path, pt=micro_pt) for a in args]
    r = subprocess.run(
        [sys.executable, str(ROOT / script), *argv, "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout[-800:] + r.stderr[-800:]
    assert len(err) == 1 and err[0].startswith("ERROR: ") and message in err[0] and "Traceback" not in r.stderr
    assert r.stdout.strip() == ""  # nothing ran: no device line, no model summary, no dataset scan
    assert not (tmp_path / "runs").exists()
    assert not any(micro_pt.with_suffix(s).exists() for s in (".onnx", ".torchscript"))  # export wrote nothing


@pytest.mark.parametrize("module", [train, val, detect, export])
def test_argparse_errors_are_one_line(module, capsys):
    with pytest.raises(SystemExit) as e:
        module.parse_opt(["--imgsz", "big", "--weights", "x.pt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("ERROR: argument --imgsz") and "invalid int value: 'big'" in err[0]


def test_new_train_flags_parse():
    opt = train.parse_opt(["--ddp-timeout", "60", "--backbone-sha256", SHA])
    assert (opt.ddp_timeout, opt.backbone_sha256) == (60, SHA)
    assert train.parse_opt([]).ddp_timeout == 10800


# ------------------------------------------------------------------------------------------ run() from Python
def _no_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first heavy step of each script fails the test if reached: the checks must come before it."""

    def heavy(*a, **k):
        raise AssertionError("reached data / model loading before the arguments were checked")

    for mod, fn in (
        (train, "resolve_cfg"),
        (train, "_resolve_run"),
        (train, "prepare_data"),
        (val, "_load_runner"),
        (detect, "Detector"),
        (detect, "newest_weights"),
        (export, "load_checkpoint_model"),
    ):
        monkeypatch.setattr(mod, fn, heavy)


TRAIN_BAD = [
    (dict(epochs=0), "--epochs 0: must be >= 1"),
    (dict(epochs=-1), "--epochs -1: must be >= 1"),  # was exit 0, "1 epochs completed", no weights
    (dict(epochs=2.5), "--epochs 2.5: must be a whole number"),
    (dict(batch_size=0), "--batch-size 0: must be >= 1"),
    (dict(batch_size=-1), "--batch-size -1: AutoBatch is not supported"),
    (dict(imgsz=0), "--imgsz 0: must be >= 32"),  # was cv2.error
    (dict(imgsz=16), "--imgsz 16: must be >= 32"),
    (dict(imgsz=65), "--imgsz 65: must be a multiple of 32"),
    (dict(workers=-1), "--workers -1: must be >= 0"),
    (dict(optimizer="sgd"), "--optimizer 'sgd': not a valid choice — choose from SGD, Adam, AdamW"),
    (dict(cache="gpu"), "--cache 'gpu': not a valid choice"),
    (dict(label_smoothing=1.0), "--label-smoothing 1.0: must be in [0, 1)"),
    (dict(label_smoothing=-0.1), "--label-smoothing -0.1: must be in [0, 1)"),
    (dict(patience=-1), "--patience -1: must be >= 0"),
    (dict(freeze=[-1]), "--freeze -1: must be >= 0"),
    (dict(epochs=5, freeze_epochs=5), "--freeze-epochs 5: must be in 0..4"),
    (dict(freeze_epochs=-1), "--freeze-epochs -1: must be in 0.."),
    (dict(layer_decay=1.5), "--layer-decay 1.5: must be in [0, 1]"),
    (dict(layer_decay=math.nan), "--layer-decay nan: must be in [0, 1]"),
    (dict(save_period=-2), "--save-period -2: must be >= -1"),
    (dict(seed=-1), "--seed -1: must be in 0..2147483647"),
    (dict(ddp_timeout=0), "--ddp-timeout 0: must be in 1..604800"),
    (dict(backbone_sha256="abc", backbone_weights="w.pth"), "--backbone-sha256 'abc': not a SHA-256 digest"),
    (dict(backbone_sha256=SHA), "--backbone-sha256 '" + SHA + "': given without --backbone-weights"),
    (dict(device="mps"), "--device 'mps': not a device this code base runs on"),
    (dict(device="tpu"), "--device 'tpu': not a device this code base runs on"),
    (dict(device="0,x"), "--device '0,x': not a device this code base runs on"),
]
VAL_BAD = [
    (dict(batch_size=0), "--batch-size 0: must be >= 1"),
    (dict(imgsz=65), "--imgsz 65: must be a multiple of 32"),  # was accepted while train rejected it
    (dict(imgsz=0), "--imgsz 0: must be >= 32"),
    (dict(conf_thres=1.5), "--conf-thres 1.5: must be in [0, 1]"),  # was checked only after the model ran
    (dict(iou_thres=-0.1), "--iou-thres -0.1: must be in [0, 1]"),
    (dict(max_det=0), "--max-det 0: must be >= 1"),
    (dict(task="bench"), "--task 'bench': not a valid choice"),
    (dict(workers=-1), "--workers -1: must be >= 0"),
    (dict(device="mps"), "--device 'mps'"),
]
DETECT_BAD = [
    (dict(imgsz=[640, 640, 640]), "--imgsz 640 640 640: give 1 or 2 values"),
    (dict(imgsz=0), "--imgsz 0: must be >= 32"),
    (dict(conf_thres=math.nan), "--conf-thres nan: must be in [0, 1]"),
    (dict(iou_thres=2), "--iou-thres 2: must be in [0, 1]"),
    (dict(max_det=0), "--max-det 0: must be >= 1"),
    (dict(line_thickness=0), "--line-thickness 0: must be >= 1"),
    (dict(vid_stride=0), "--vid-stride 0: must be >= 1"),
    (dict(classes=[0, -1]), "--classes -1: must be >= 0"),
    (dict(device="cuda:x"), "--device 'cuda:x'"),
]
EXPORT_BAD = [
    (dict(batch_size=0), "--batch-size 0: must be >= 1"),
    (dict(opset=5), "--opset 5: must be in "),
    (dict(opset=999), "--opset 999: must be in "),
    (dict(imgsz=[64, 64, 64]), "--imgsz 64 64 64: give 1 or 2 values"),
    (dict(imgsz=16), "--imgsz 16: must be >= 32"),
    (dict(device="mps"), "--device 'mps'"),
]
CASES = (
    [(train, kw, m) for kw, m in TRAIN_BAD]
    + [(val, {"data": "d.yaml", **kw}, m) for kw, m in VAL_BAD]
    + [(detect, kw, m) for kw, m in DETECT_BAD]
    + [(export, {"include": ["onnx"], **kw}, m) for kw, m in EXPORT_BAD]
)


@pytest.mark.parametrize(
    "module,kwargs,message",
    CASES,
    ids=[
        f"{m.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items() if k not in ('data', 'include'))}"
        for m, kw, _ in CASES
    ],
)
def test_run_rejects_bad_argument_before_work(module, kwargs, message, tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    kw = {"project": str(tmp_path / "runs")} if module is not export else {"weights": str(tmp_path / "w.pt")}
    with pytest.raises(UserError) as e:
        module.run(**kw, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert " — " in str(e.value)  # says what to do
    assert not (tmp_path / "runs").exists()


def test_good_arguments_reach_the_work(tmp_path, monkeypatch):
    """The checks are not stricter than the scripts' defaults and documented values."""
    _no_heavy_work(monkeypatch)
    calls = [
        lambda: train.run(
            project=str(tmp_path),
            imgsz=64,
            freeze=[10],
            freeze_epochs=2,
            epochs=3,
            patience=0,
            save_period=-1,
            layer_decay=0.8,
            label_smoothing=0.1,
            backbone_weights="w.pth",
            backbone_sha256=SHA.upper(),
            cache=True,
            workers=0,
            device="cpu",
        ),
        lambda: val.run(data="d.yaml", imgsz=64, conf_thres=0.001, task="speed", workers=0, device="cpu"),
        lambda: detect.run(imgsz=[50, 70], classes=[0, 2], line_thickness=None, conf_thres=0, device="cpu"),
        lambda: export.run(weights="w.pt", imgsz=[48, 80], opset=17, include="onnx", device="cpu"),
    ]
    for call in calls:
        with pytest.raises(AssertionError, match="reached data / model loading"):
            call()
    o = dict(
        epochs=3,
        batch_size=8,
        imgsz=[64],
        workers=0,
        optimizer="SGD",
        cache=None,
        label_smoothing=0.0,
        patience=100,
        freeze=10,
        freeze_epochs=0,
        layer_decay=0.0,
        save_period=-1,
        seed=0,
        ddp_timeout=60,
        backbone_sha256=SHA.upper(),
        backbone_weights="w.pth",
        device=" CPU ",
    )
    assert train.check_opts(train.TrainOptions(**o)) == {
        "device": "cpu",
        "backbone_sha256": SHA,
        "freeze": [10],
        "imgsz": 64,
    }


def test_train_and_val_agree_on_imgsz(tmp_path, monkeypatch):
    _no_heavy_work(monkeypatch)
    for size in (48, 65, 100):
        calls = (
            lambda s=size: train.run(imgsz=s, project=str(tmp_path)),
            lambda s=size: val.run(data="d.yaml", imgsz=s),
        )
        for call in calls:
            with pytest.raises(UserError, match=f"--imgsz {size}: must be a multiple of 32"):
                call()
    with pytest.raises(
        UserError, match="--imgsz 96: must be a multiple of the model's max stride 64 — e.g. --imgsz 128"
    ):
        A.check_stride_multiple(96, 64)  # train.py's check once the model is built


class _Stride64(torch.nn.Module):
    """An in-memory P6-style model (max stride 64), as train.py hands to val.run."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.stride, self.nc, self.names = torch.tensor([8.0, 16.0, 32.0, 64.0]), 2, {0: "a", 1: "b"}


def test_val_imgsz_must_fit_the_model_stride(tmp_path):
    with pytest.raises(UserError, match="--imgsz 96: must be a multiple of the model's max stride 64"):
        val.run(
            data={"names": {0: "a", 1: "b"}, "nc": 2, "val": str(tmp_path)},
            model=_Stride64(),
            imgsz=96,
            save_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ val run folders (item 10)
def test_val_bad_data_or_nc_mismatch_leaves_no_run_folder(micro_pt, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="missing.yaml"):
        val.run(data=str(tmp_path / "missing.yaml"), weights=micro_pt, device="cpu", project=runs)
    with pytest.raises(UserError, match="has 2 classes but the dataset has 3"):
        val.run(
            data={"names": {0: "a", 1: "b", 2: "c"}, "nc": 3, "val": str(tmp_path)},
            weights=micro_pt,
            device="cpu",
            project=runs,
        )
    assert not runs.exists()


# ------------------------------------------------------------------------------------------ devices
def test_device_strings(monkeypatch):
    assert [check_device(d) for d in ("", "cpu", " CPU ", torch.device("cpu"))] == ["", "cpu", "cpu", "cpu"]
    for bad in ("mps", "tpu", "0,x", "-1", "gpu0", "cuda:a"):
        with pytest.raises(UserError, match="use '' \\(auto: first GPU, else CPU\\), cpu, or CUDA indices like 0"):
            check_device(bad)
    with pytest.raises(UserError, match="only CPU and CUDA"):
        select_device(torch.device("meta"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device 0 requested but CUDA is not available on this machine"):
        check_device("0")
    assert select_device("", verbose=False).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [check_device(d) for d in ("0", "cuda:1", "0,1", "cuda")] == ["0", "1", "0,1", "0"]
    with pytest.raises(UserError, match="GPU 2 not found \\(2 visible\\)"):
        check_device("0,2")
    with pytest.raises(UserError, match="listed twice"):
        check_device("1,1")


# ------------------------------------------------------------------------------------------ export opsets
def test_export_opset_range_from_torch_and_too_old_opset(micro_pt, tmp_path):
    pytest.importorskip("onnx")
    lo, hi = export.onnx_opset_range()
    assert lo <= 9 and export.DEFAULT_OPSET <= hi < 1000  # read from the installed torch, not a guess
    with pytest.raises(UserError, match=f"--opset {hi + 1}: must be in {lo}..{hi}"):
        export.run(weights=micro_pt, include=["onnx"], opset=hi + 1)
    if lo <= 8:  # in range for torch, but this model's nearest upsampling needs opset 9
        with pytest.raises(UserError, match="--opset 8: the ONNX exporter cannot write this model"):
            export.run(weights=micro_pt, imgsz=64, include=["onnx"], opset=8)
