"""classify/train.py end to end on a tiny generated folder: outputs, top-1 equal to classify/val.py's, exact resume,
DDP with 2 CPU ranks, one-line errors for bad input, and a classifier's backbone going into a detector."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pytest
import torch

import train as det_train
from classify import train as cls_train
from classify import val as cls_val
from models.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from models.classifier import ClassificationModel
from tests.fixtures_classify import CLS_IMGSZ, CLS_TRAIN
from tests.fixtures_train import free_port
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.training.classify_options import CLASSIFY_COLUMNS
from utils.training.classify_trainer import ClassifyTrainer


def _rows(path):
    with open(path, newline="") as f:
        return [[c.strip() for c in r] for r in csv.reader(f) if r]


def test_training_writes_yolov5s_outputs_and_val_agrees(cls_run, cls_data):
    d = cls_run.save_dir
    for f in ("weights/best.pt", "weights/last.pt", "results.csv", "results.png", "train_images.jpg",
              "confusion_matrix.png", "opt.yaml"):  # fmt: skip
        assert (d / f).is_file(), f
    rows = _rows(d / "results.csv")
    assert rows[0] == ["epoch", *CLASSIFY_COLUMNS] and [r[0] for r in rows[1:]] == ["0", "1"]
    assert cls_run.epochs_trained == 2 and cls_run.metrics.images == 9
    assert cls_run.top1 == pytest.approx(cls_run.metrics.confusion.trace() / 9)
    ckpt = load_checkpoint(d / "weights" / "best.pt")
    assert ckpt["epoch"] == -1 and ckpt["model"]["yaml"]["task"] == "classify"  # finished: optimizer stripped
    m = cls_val.run(data=str(cls_data), weights=str(d / "weights" / "best.pt"), device="cpu", workers=0, plots=False)
    assert m.top1 == pytest.approx(cls_run.top1) and m.top5 == pytest.approx(cls_run.top5)
    assert m.loss == pytest.approx(cls_run.loss, rel=1e-4)


def test_resume_continues_exactly(cls_data, tmp_path, monkeypatch):
    """An uninterrupted 3-epoch run and one stopped after epoch 1 then resumed end with the same weights and rows."""
    kw = {**CLS_TRAIN, "epochs": 3, "noplots": True, "data": str(cls_data), "project": str(tmp_path)}
    full = cls_train.run(name="full", **kw)
    end_epoch = ClassifyTrainer._end_epoch

    def stop_after_epoch_1(self, epoch, loss, lr):
        stop = end_epoch(self, epoch, loss, lr)
        if epoch == 1:
            raise KeyboardInterrupt  # the run dies after last.pt of epoch 1 is written
        return stop

    monkeypatch.setattr(ClassifyTrainer, "_end_epoch", stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        cls_train.run(name="cut", **kw)
    monkeypatch.setattr(ClassifyTrainer, "_end_epoch", end_epoch)
    resumed = cls_train.run(resume=str(tmp_path / "cut" / "weights" / "last.pt"), device="cpu", workers=0)
    assert resumed.save_dir == tmp_path / "cut" and resumed.epochs_trained == 3
    a = load_checkpoint(full.last)["model"]["state_dict"]  # finished runs keep the EMA weights as the model
    b = load_checkpoint(resumed.last)["model"]["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "full" / "results.csv") == _rows(tmp_path / "cut" / "results.csv")
    assert resumed.top1 == full.top1


def test_ddp_two_cpu_ranks(cls_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "classify" / "train.py"), "--data", str(cls_data), "--epochs", "1", "--batch-size", "8",
           "--img", str(CLS_IMGSZ), "--device", "cpu", "--workers", "0", "--project", str(tmp_path), "--name", "ddp",
           "--noplots"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env={**os.environ, "OMP_NUM_THREADS": "1"},
                       timeout=240)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "gloo process group, world size 2" in out
    assert (tmp_path / "ddp" / "weights" / "best.pt").is_file() and not (tmp_path / "ddp2").exists()
    rows = _rows(tmp_path / "ddp" / "results.csv")
    assert len(rows) == 2 and 0 <= float(rows[1][3]) <= 1
    assert out.count("top-1 ") == 1  # rank 0 reports the whole split's top-1 once


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "not found"),
        ("flat", "has no train/ folder"),
        ("only_in_val", "only in val"),
        ("other_family", r"holds a YOLOv5 CSP backbone .* but the model is a ConvNeXt-atto"),
        ("detection_ckpt", "detection checkpoint"),
        ("bad_lr", "--lr0"),
        ("bad_epochs", "--epochs"),
    ],
)
def test_bad_input_is_one_line(case, match, cls_data, tmp_path, micro_pt):
    kw = {**CLS_TRAIN, "data": str(cls_data), "project": str(tmp_path)}
    if case == "missing":
        kw["data"] = str(tmp_path / "nowhere")
    elif case == "flat":
        (tmp_path / "flat").mkdir()
        (tmp_path / "flat" / "a.jpg").write_bytes(next((cls_data / "val" / "circle").glob("*.jpg")).read_bytes())
        kw["data"] = str(tmp_path / "flat")
    elif case == "only_in_val":
        extra = tmp_path / "d"
        (extra / "train").mkdir(parents=True)
        for c in ("circle", "rectangle", "triangle"):
            os.symlink(cls_data / "train" / c, extra / "train" / c)
        (extra / "val" / "square").mkdir(parents=True)
        (extra / "val" / "square" / "a.jpg").write_bytes(next((cls_data / "val" / "circle").glob("*.jpg")).read_bytes())
        for c in ("circle", "rectangle", "triangle"):
            os.symlink(cls_data / "val" / c, extra / "val" / c)
        kw["data"] = str(extra)
    elif case == "other_family":
        kw["pretrained"] = _yolov5_cls_checkpoint(tmp_path)
    elif case == "detection_ckpt":
        kw["model"] = str(micro_pt)
    elif case == "bad_lr":
        kw["lr0"] = -1.0
    else:
        kw["epochs"] = 0
    with pytest.raises(UserError, match=match) as e:
        cls_train.run(**kw)
    assert "\n" not in str(e.value)


def _yolov5_cls_checkpoint(tmp_path):
    """A classifier checkpoint of ours of another family (yolov5n-cls) than the convnext_atto being trained."""
    m = ClassificationModel("yolov5n-cls", nc=3)
    ckpt = new_checkpoint(-1, 0.0, m, None, 0, None, None, {}, {})
    return str(save_checkpoint(ckpt, tmp_path / "yolov5n-cls.pt"))


def test_cli_exit_code_2(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "classify" / "train.py"), "--data", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd="/", timeout=120)  # fmt: skip
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "not found" in lines[0], r.stderr[-2000:]


def test_classifier_backbone_trains_a_detector(cls_run, shapes_yaml, tmp_path, caplog):
    """In-domain pretraining: classify/train.py's best.pt is the --backbone-weights of a matching detector."""
    res = det_train.run(cfg=str(ROOT / "models" / "yolov5_ConvNeXt-atto.yaml"), data=str(shapes_yaml),
                        backbone_weights=str(cls_run.best), epochs=1, batch_size=4, imgsz=64, device="cpu",
                        workers=0, project=str(tmp_path), name="det", noplots=True, noautoanchor=True)  # fmt: skip
    assert res["best"] is not None
    m = re.search(
        r"Backbone weights from \S*best\.pt.*\(classifier checkpoint format\): (\d+) loaded, (\d+) skipped", caplog.text
    )
    assert m, caplog.text[-2000:]
    backbone = [k for k in load_checkpoint(cls_run.best)["model"]["state_dict"] if not k.startswith("model.4.")]
    assert int(m.group(1)) == len(backbone) and int(m.group(2)) > 0  # every backbone tensor; the head skipped
