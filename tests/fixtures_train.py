"""Training fixtures: a micro ConvNeXt-YOLOv5 trained briefly on the shapes fixture dataset (session-wide)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_models import micro_cfg
from utils.core.files import ROOT

# The fixture dataset has 4 batches of 8 per epoch: with YOLOv5's nominal batch 64 the optimizer would step once every
# two epochs, so the fixture accumulates only to 8 (hyp nbs) and uses a higher AdamW lr. 120 epochs x 4 steps reach
# mAP50 ~0.8 on the 16 val images in ~55 s on 2 cores (measured), enough for the detection test to find every object.
FIXTURE_EPOCHS = 120
FIXTURE_IMGSZ = 128


# results.csv columns, in YOLOv5's order
YOLOV5_COLUMNS = [
    "epoch",
    "train/box_loss",
    "train/obj_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
    "x/lr0",
    "x/lr1",
    "x/lr2",
]


def train_hyp(**over: Any) -> dict[str, Any]:
    """data/hyps/hyp.shapes.yaml with overrides (warmup floor and nominal batch lowered for tiny datasets)."""
    hyp = yaml.safe_load(open(ROOT / "data" / "hyps" / "hyp.shapes.yaml"))
    hyp.update(warmup_min_iters=10, nbs=8)
    hyp.update(over)
    return hyp


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it), for a DDP rendezvous that must not collide with
    another run on the same machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run train.py from another cwd (scripts must work from anywhere)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def csv_epochs(path: Path) -> list[int]:
    """Epoch column of results.csv's complete rows: every column present and the line ended (a row cut off by a
    crash has no final newline)."""
    lines = path.read_text().split("\n")[1:-1]  # no header; the last piece is "" or the cut-off row
    rows = [line.split(",") for line in lines]
    return [int(float(r[0])) for r in rows if len(r) == len(YOLOV5_COLUMNS)]


def write_micro_cfg(path: Path, nc: int = 2) -> Path:
    """The micro model yaml on disk (train.py CLI takes a path)."""
    path.write_text(yaml.safe_dump(micro_cfg(nc=nc), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def micro_cfg_file(tmp_path_factory) -> Path:
    """Path of a micro ConvNeXt-YOLOv5 yaml (nc=2) for train.py."""
    return write_micro_cfg(tmp_path_factory.mktemp("cfg") / "micro.yaml")


@pytest.fixture(scope="session")
def trained_run(shapes_yaml, micro_cfg_file, tmp_path_factory) -> dict[str, Any]:
    """train.run() results of a short micro-model run on the shapes fixture data (best.pt path in ['best'])."""
    import train

    project = tmp_path_factory.mktemp("train")
    return train.run(
        cfg=str(micro_cfg_file),
        data=str(shapes_yaml),
        hyp=train_hyp(lr0=0.01),
        epochs=FIXTURE_EPOCHS,
        batch_size=8,
        imgsz=FIXTURE_IMGSZ,
        project=str(project),
        name="fixture",
        workers=0,
        device="cpu",
        seed=0,
    )


@pytest.fixture(scope="session")
def trained_weights(trained_run) -> Path:
    """best.pt of the fixture training run (stripped: EMA weights in fp16)."""
    return Path(trained_run["best"])
