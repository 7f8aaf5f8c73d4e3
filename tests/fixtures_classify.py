"""Classification fixtures: a tiny generated image-folder dataset and one short training run on it (session-wide),
shared by the classifier training, validation, prediction and export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from classify import train as cls_train
from data.scripts.make_shapes import generate_shapes_cls

CLS_IMGSZ = 32  # small enough for seconds per epoch on 2 cores, large enough for ConvNeXt's stride 32
CLS_TRAIN = dict(  # the settings of every short test run (run() keywords)
    model="convnext_atto", epochs=2, batch_size=8, imgsz=CLS_IMGSZ, workers=0, device="cpu", noplots=False, seed=0
)


@pytest.fixture(scope="session")
def cls_data(tmp_path_factory) -> Path:
    """root/train/<class>/*.jpg (8 per class) and root/val/<class>/*.jpg (3 per class), classes circle, rectangle,
    triangle."""
    root = tmp_path_factory.mktemp("cls") / "shapes-cls"
    generate_shapes_cls(root, n_train=24, n_val=9, imgsz=CLS_IMGSZ, seed=0)
    return root


@pytest.fixture(scope="session")
def cls_run(cls_data, tmp_path_factory):
    """One finished 2-epoch classify/train.py run on cls_data: its ClassifyRunResult."""
    project = tmp_path_factory.mktemp("train-cls")
    return cls_train.run(data=str(cls_data), project=str(project), name="exp", **CLS_TRAIN)
