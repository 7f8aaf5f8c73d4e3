"""Model fixtures for every area's tests: a micro ConvNeXt-YOLOv5 config that builds in milliseconds."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import pytest

# depths [1,1,1,1], dims [16,32,64,128], one C3 per head stage, width 0.25: ~0.28 M parameters, strides 8/16/32.
MICRO_CFG: dict[str, Any] = {
    "nc": 2,
    "depth_multiple": 0.33,
    "width_multiple": 0.25,
    "convnext": {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], "version": 1, "drop_path": 0.0},
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "ConvNeXt_Block", [s]] for s in range(4)],
    "head": [
        [-1, 1, "Conv", [128, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 2], 1, "Concat", [1]],
        [-1, 1, "C3", [128, False]],
        [-1, 1, "Conv", [64, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 1], 1, "Concat", [1]],
        [-1, 1, "C3", [64, False]],  # 11 P3
        [-1, 1, "Conv", [64, 3, 2]],
        [[-1, 8], 1, "Concat", [1]],
        [-1, 1, "C3", [128, False]],  # 14 P4
        [-1, 1, "Conv", [128, 3, 2]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 1, "C3", [256, False]],  # 17 P5
        [[11, 14, 17], 1, "Detect", ["nc", "anchors"]],
    ],
}


def micro_cfg(nc: int = 2, version: int = 1, **convnext: Any) -> dict[str, Any]:
    """A fresh copy of MICRO_CFG with nc, ConvNeXt version and any `convnext:` overrides (e.g. drop_path=0.1)."""
    cfg = deepcopy(MICRO_CFG)
    cfg["nc"] = nc
    cfg["convnext"].update(version=version, **convnext)
    return cfg


@pytest.fixture
def micro_model_cfg() -> dict[str, Any]:
    """Micro ConvNeXt-V1 cfg dict with nc=2 (a fresh copy per test)."""
    return micro_cfg()


@pytest.fixture
def micro_model():
    """A built micro Model (nc=2, names circle/square), in training mode."""
    from models.yolo import Model

    model = Model(micro_cfg())
    model.names = {0: "circle", 1: "square"}
    return model
