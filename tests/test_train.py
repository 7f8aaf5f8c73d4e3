"""train.py: a short run learns, outputs and checkpoints, SIGKILL + --resume, layer decay, freeze-epochs, NaN guard,
bad input on the CLI."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures_train import FIXTURE_IMGSZ, YOLOV5_COLUMNS, cli, csv_epochs, train_hyp
from utils.core.errors import UserError
from utils.core.files import ROOT


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return [h.strip() for h in rows[0]], np.array([[float(v) for v in r] for r in rows[1:]])


# ---------------------------------------------------------------------------------------------- the fixture run
def test_short_run_improves_map(trained_run):
    header, data = read_csv(Path(trained_run["save_dir"]) / "results.csv")
    assert header == YOLOV5_COLUMNS
    assert data[:, 0].tolist() == list(range(len(data)))
    map50 = data[:, header.index("metrics/mAP_0.5")]
    assert map50[-1] > map50[0] + 0.2, map50
    assert trained_run["mAP50"] >= 0.5, trained_run  # final validation of best.pt
    losses = data[:, 1:4].sum(1)
    assert losses[-1] < losses[0]


def test_run_outputs_and_stripped_checkpoints(trained_run):
    d = Path(trained_run["save_dir"])
    for f in (
        "results.csv",
        "results.png",
        "labels.jpg",
        "train_batch0.jpg",
        "train_batch1.jpg",
        "train_batch2.jpg",
        "hyp.yaml",
        "opt.yaml",
        "confusion_matrix.png",
        "PR_curve.png",
    ):
        assert (d / f).is_file(), f
    from utils.core.files import yaml_load

    opt = yaml_load(d / "opt.yaml")
    assert opt["epochs"] > 0 and opt["imgsz"] == FIXTURE_IMGSZ and opt["batch_size"] == 8
    assert yaml_load(d / "hyp.yaml")["lr0"] > 0
    for name in ("best.pt", "last.pt"):  # stripped at the end: EMA weights in fp16, no optimizer, epoch -1
        ck = torch.load(d / "weights" / name, map_location="cpu", weights_only=True)
        assert ck["epoch"] == -1 and ck["optimizer"] is None and ck["ema"] is None
        floats = [v for v in ck["model"]["state_dict"].values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        assert ck["opt"]["imgsz"] == FIXTURE_IMGSZ and "lr0" in ck["hyp"]


def test_weights_transfer_and_nc_mismatch(trained_weights, micro_cfg_file, caplog):
    from utils.training.train_setup import build_model

    same = build_model(micro_cfg_file, trained_weights, 3, {0: "a", 1: "b", 2: "c"}, torch.device("cpu"))
    n_all = len(same.state_dict())
    assert f"Transferred {n_all}/{n_all} items" in caplog.text
    ref = torch.load(trained_weights, weights_only=True)["model"]["state_dict"]
    assert torch.equal(same.state_dict()["model.0.downsample.0.weight"], ref["model.0.downsample.0.weight"].float())
    caplog.clear()  # 2 classes: Detect output convs differ in shape and stay at init
    other = build_model(micro_cfg_file, trained_weights, 2, {0: "a", 1: "b"}, torch.device("cpu"))
    n2 = len(other.state_dict())
    assert f"Transferred {n2 - 6}/{n2} items" in caplog.text  # all but the 3 Detect output convs' weights + biases
    assert "nc=3" in caplog.text and "nc=2" in caplog.text


# ---------------------------------------------------------------------------------------------- resume
def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 150) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stdout.read()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for " + str(path))
        time.sleep(0.05)


def test_sigkill_then_resume_continues(shapes_yaml, micro_cfg_file, tmp_path):
    args = [
        "--cfg",
        str(micro_cfg_file),
        "--data",
        str(shapes_yaml),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--img",
        "64",
        "--project",
        str(tmp_path),
        "--name",
        "r",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--save-period",
        "1",
        "--noplots",
        "--noautoanchor",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",
    )
    w = tmp_path / "r" / "weights"
    _wait_for(w / "epoch1.pt", proc)  # written after last.pt of epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    ck1 = torch.load(w / "last.pt", weights_only=True)
    assert ck1["epoch"] == 1, "the run must be killed after epoch 1 of 3"
    r = cli("--resume", str(w / "last.pt"), "--workers", "0", "--device", "cpu")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Resuming training from epoch 2" in r.stdout
    # the final validation of best.pt prints the per-class rows, like YOLOv5
    assert all(re.search(rf"^\s+{c}\s+\d+\s+\d+\s", r.stdout, re.M) for c in ("circle", "rectangle", "triangle"))
    header, data = read_csv(tmp_path / "r" / "results.csv")
    assert data[:, 0].tolist() == [0, 1, 2]
    ck2 = torch.load(w / "epoch2.pt", weights_only=True)
    assert ck2["updates"] > ck1["updates"] > 0  # EMA updates continue from the checkpoint
    steps1 = {int(s["step"]) for s in ck1["optimizer"]["state"].values()}
    steps2 = {int(s["step"]) for s in ck2["optimizer"]["state"].values()}
    assert steps1 == {ck1["updates"]} and steps2 == {ck2["updates"]}  # optimizer step count continues too
    done = cli("--resume", str(w / "last.pt"))
    assert done.returncode == 2 and "finished run" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------- optimizer schedule
def test_layer_decay_lr_scales(micro_model):
    from models.sizes import layer_decay_ids
    from utils.training.train_options import TrainOptions
    from utils.training.train_setup import make_optimizer

    opt = TrainOptions(total_batch_size=64, optimizer="AdamW", layer_decay=0.8, epochs=10, cos_lr=False)
    hyp = {"lr0": 0.001, "lrf": 0.01, "momentum": 0.9, "weight_decay": 0.05}
    optimizer, _, _ = make_optimizer(micro_model, opt, hyp)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    ids, num_layers = layer_decay_ids(micro_model)
    lrs = {n: lr_of[id(p)] for n, p in micro_model.named_parameters()}
    assert len(lrs) == len(list(micro_model.parameters()))  # every parameter is in a group
    for n, lid in ids.items():  # scale = rate^(num_layers + 1 - id)
        assert lrs[n] == pytest.approx(0.001 * 0.8 ** (num_layers + 1 - lid)), n
    stem = lrs["model.0.downsample.0.weight"]
    assert stem == min(lrs.values()) and stem == pytest.approx(0.001 * 0.8 ** (num_layers + 1))
    detect = len(micro_model.model) - 1
    assert lrs[f"model.{detect}.m.0.weight"] == pytest.approx(0.001)  # Detect head: full LR


def test_freeze_epochs_unfreezes_backbone(shapes_yaml, micro_cfg_file, trained_weights, tmp_path):
    # batch 32 = the whole fixture train split: accumulation (to 64) still steps the optimizer in every epoch
    import train

    r = train.run(
        weights=str(trained_weights),
        cfg=str(micro_cfg_file),
        data=str(shapes_yaml),
        hyp=train_hyp(),
        epochs=2,
        batch_size=32,
        imgsz=64,
        project=str(tmp_path),
        name="f",
        workers=0,
        device="cpu",
        freeze_epochs=1,
        save_period=1,
        noplots=True,
        noval=True,
        noautoanchor=True,
    )
    w = Path(r["save_dir"]) / "weights"
    init = torch.load(trained_weights, weights_only=True)["model"]["state_dict"]
    e0 = torch.load(w / "epoch0.pt", weights_only=True)["model"]["state_dict"]
    e1 = torch.load(w / "epoch1.pt", weights_only=True)["model"]["state_dict"]
    bb = [k for k in e0 if k.split(".")[1] in ("0", "1", "2", "3") and e0[k].is_floating_point()]
    head = [k for k in e0 if k.split(".")[1] not in ("0", "1", "2", "3") and e0[k].is_floating_point()]
    assert bb and head
    assert all(torch.equal(e0[k], init[k].float()) for k in bb)  # frozen during epoch 0
    assert any(not torch.equal(e0[k], init[k].float()) for k in head)  # while the head trained
    assert any(not torch.equal(e1[k], e0[k]) for k in bb)  # free from epoch 1


def test_nan_loss_stops_keeping_last_good_checkpoint(shapes_yaml, micro_cfg_file, tmp_path, monkeypatch):
    import train
    import utils.training.loss as loss_mod

    real = loss_mod.ComputeLoss

    class NaNAfter(real):
        calls = 0

        def __call__(self, p, targets):
            loss, items = super().__call__(p, targets)
            NaNAfter.calls += 1
            return (loss * float("nan"), items) if NaNAfter.calls > 3 else (loss, items)

    monkeypatch.setattr(train, "ComputeLoss", NaNAfter)
    with pytest.raises(UserError, match="non-finite training loss at epoch 1"):
        train.run(
            cfg=str(micro_cfg_file),
            data=str(shapes_yaml),
            hyp=train_hyp(),
            epochs=3,
            batch_size=16,
            imgsz=64,
            project=str(tmp_path),
            name="n",
            workers=0,
            device="cpu",
            noplots=True,
            noval=True,
            noautoanchor=True,
        )
    last = tmp_path / "n" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--cfg", "no_such_model.yaml"], {}, "model yaml not found"),
        (
            ["--batch-size", "3"],
            {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
            "not a multiple of the world size 2",
        ),
        (["--resume", "--project", "{tmp}"], {}, "nothing to resume"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, env, message, tmp_path):
    r = cli(*[a.format(tmp=tmp_path) for a in args], "--device", "cpu", env=env)
    assert r.returncode == 2, r.stdout[-1000:] + r.stderr[-1000:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- small pieces
def test_results_csv_trim_on_resume_and_plot(tmp_path):
    from utils.training.train_outputs import TrainOutputs

    out = TrainOutputs(tmp_path, plots=True)
    for e in range(3):
        out.log_epoch(e, [0.1 * e] * 13)
    assert csv_epochs(out.csv) == [0, 1, 2]
    out.trim_csv(1)  # resuming at epoch 1: rows 1 and 2 will be trained again
    assert csv_epochs(out.csv) == [0]
    out.log_epoch(1, [1.0] * 13)
    header, data = read_csv(tmp_path / "results.csv")
    assert header == YOLOV5_COLUMNS and data[:, 0].tolist() == [0, 1] and data[1, 5] == 1.0
    out.finish()
    assert (tmp_path / "results.png").is_file()


def test_batch_split_and_early_stopping():
    from utils.core.distributed import check_batch_size
    from utils.training.trainer import EarlyStopping

    assert check_batch_size(8, 2) == 4 and check_batch_size(5, 1) == 5
    with pytest.raises(UserError, match="not a multiple of the world size 2"):
        check_batch_size(3, 2)
    stop = EarlyStopping(patience=2)
    flags = [stop(e, f) for e, f in enumerate([0.1, 0.3, 0.2, 0.25, 0.29])]
    assert flags == [False, False, False, True, True] and stop.best_epoch == 1


def test_resume_lookup(tmp_path):
    from utils.training.train_setup import find_resume_checkpoint

    a, b = tmp_path / "exp" / "weights" / "last.pt", tmp_path / "exp2" / "weights" / "last.pt"
    for f in (a, b):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
    os.utime(a, (time.time() + 10, time.time() + 10))  # exp is the newest
    assert find_resume_checkpoint(True, tmp_path) == a
    assert find_resume_checkpoint(str(tmp_path / "exp2"), tmp_path) == b
    with pytest.raises(UserError, match="no such checkpoint"):
        find_resume_checkpoint(str(tmp_path / "nope.pt"), tmp_path)
