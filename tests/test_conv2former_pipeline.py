"""Everything downstream of the model works on a Conv2Former backbone as on a ConvNeXt one: train, resume, DDP with two
CPU ranks, val, detect, OpenVINO export with outputs matching PyTorch, and torch.hub `custom`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import detect
import export
import train
import utils.training.trainer as trainer_mod
import val
from models.checkpoint import load_checkpoint
from tests.fixtures_models import micro_c2f_cfg
from tests.fixtures_train import free_port
from utils.core.files import ROOT
from utils.inference.backend import DetectBackend

IMGSZ = 64


@pytest.fixture(scope="module")
def c2f_run(shapes_yaml, tmp_path_factory, request) -> dict:
    """A 2-epoch micro Conv2Former run; the first epoch's last.pt is kept aside (unfinished: resumable)."""
    base = tmp_path_factory.mktemp("c2f")
    cfg = base / "c2f.yaml"
    cfg.write_text(yaml.safe_dump(micro_c2f_cfg(), sort_keys=False))
    kept = base / "epoch0_last.pt"
    real = trainer_mod.save_last_and_best

    def keep_first(ckpt, last, best=None):  # last.pt as it stood after epoch 0
        real(ckpt, last, best)
        if not kept.exists():
            shutil.copy(last, kept)

    mp = pytest.MonkeyPatch()
    request.addfinalizer(mp.undo)
    mp.setattr(trainer_mod, "save_last_and_best", keep_first)
    res = train.run(
        cfg=str(cfg),
        data=str(shapes_yaml),
        epochs=2,
        batch_size=8,
        imgsz=IMGSZ,
        workers=0,
        device="cpu",
        project=str(base),
        name="run",
        noplots=True,
        noautoanchor=True,
    )
    mp.undo()
    return {**res, "cfg": cfg, "epoch0": kept, "base": base}


def test_trains_and_resumes(c2f_run: dict) -> None:
    assert c2f_run["epochs_trained"] == 2 and Path(c2f_run["best"]).is_file()
    rec = load_checkpoint(c2f_run["best"])["model"]
    assert "conv2former" in rec["yaml"] and any(".blocks.0.attn.att.2.weight" in k for k in rec["state_dict"])
    run_dir = c2f_run["base"] / "resumed"
    (run_dir / "weights").mkdir(parents=True)
    shutil.copy(c2f_run["epoch0"], run_dir / "weights" / "last.pt")
    assert load_checkpoint(run_dir / "weights" / "last.pt")["epoch"] == 0
    res = train.run(resume=str(run_dir / "weights" / "last.pt"), device="cpu", workers=0)
    assert res["epochs_trained"] == 2 and Path(res["save_dir"]) == run_dir


def test_val_detect_openvino_and_hub(c2f_run: dict, shapes_yaml: Path, tmp_path: Path) -> None:
    best = Path(c2f_run["best"])
    (p, r, map50, map5095, *_), maps, _ = val.run(
        data=shapes_yaml, weights=best, imgsz=IMGSZ, batch_size=8, project=tmp_path
    )
    assert 0.0 <= map5095 <= map50 <= 1.0 and len(maps) == 3
    images = sorted(Path(yaml.safe_load(open(shapes_yaml))["path"], "images", "val").iterdir())[:2]
    out = detect.run(weights=best, source=[str(i) for i in images], imgsz=IMGSZ, project=tmp_path, name="d")
    assert len(out["frames"]) == 2
    folder = export.run(weights=best, imgsz=IMGSZ, include=["openvino"])["openvino"]
    torch.manual_seed(0)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        want, got = DetectBackend(best)(x), DetectBackend(folder)(x)
    assert got.shape == want.shape
    assert ((got - want).abs() / want.abs().clamp(min=1)).max().item() < 1e-4  # pixels relative, scores absolute
    hub = torch.hub.load(str(ROOT), "custom", path=str(best), source="local", imgsz=IMGSZ, _verbose=False)
    res = hub([str(i) for i in images])
    assert len(res.xyxy) == 2 and hub.names == DetectBackend(best).names


def test_torchrun_two_cpu_ranks(c2f_run: dict, shapes_yaml: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(ROOT / "train.py"),
        "--cfg",
        str(c2f_run["cfg"]),
        "--data",
        str(shapes_yaml),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--img",
        str(IMGSZ),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--project",
        str(tmp_path),
        "--name",
        "ddp",
        "--noplots",
        "--noautoanchor",
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, cwd="/", env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "gloo process group, world size 2" in out and (tmp_path / "ddp" / "weights" / "best.pt").is_file()
