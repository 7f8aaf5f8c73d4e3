"""Model fixtures for every area's tests: a micro ConvNeXt-YOLOv5 config that builds in milliseconds, a random micro
checkpoint on disk, random official-format ConvNeXt V2 backbone weights."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
import torch

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


def micro_c2f_cfg(**conv2former) -> dict:
    """MICRO_CFG's head on a micro Conv2Former backbone (depths 1,1,1,1, dims 16..128, kernel 3)."""
    cfg = deepcopy(MICRO_CFG)
    del cfg["convnext"]
    cfg["conv2former"] = {"kernel_size": 3, "depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128], **conv2former}
    cfg["backbone"] = [[-1, 1, "Conv2Former_Block", [s]] for s in range(4)]
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


MICRO_NAMES = {0: "circle", 1: "square"}
# the top-level keys of a checkpoint as train.py writes it (models.checkpoint.new_checkpoint)
CKPT_KEYS = {"epoch", "best_fitness", "model", "ema", "updates", "optimizer", "scaler", "opt", "hyp", "date", "version"}


def save_micro_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised micro Model saved the way train.py saves it (model record, no EMA)."""
    from models.checkpoint import model_record, save_checkpoint
    from models.yolo import Model

    torch.manual_seed(seed)
    model = Model(MICRO_CFG, nc=len(MICRO_NAMES)).eval()
    model.names = dict(MICRO_NAMES)
    save_checkpoint({"epoch": -1, "model": model_record(model), "ema": None}, path)
    return path


@pytest.fixture(scope="module")
def micro_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random micro checkpoint (seed 0, names circle/square), one per test module: tests may write beside it."""
    return save_micro_checkpoint(tmp_path_factory.mktemp("micro") / "micro.pt")


def random_official_v2(depths: list[int], dims: list[int]) -> dict[str, torch.Tensor]:
    """Random official-format V2 weights with the published key names and shapes (GRN (1,1,1,4d))."""
    g = torch.Generator().manual_seed(3)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    sd = {
        "downsample_layers.0.0.weight": r(dims[0], 3, 4, 4),
        "downsample_layers.0.0.bias": r(dims[0]),
        "downsample_layers.0.1.weight": 1 + r(dims[0]),
        "downsample_layers.0.1.bias": r(dims[0]),
        "norm.weight": r(dims[3]),
        "norm.bias": r(dims[3]),
        "head.weight": r(1000, dims[3]),
        "head.bias": r(1000),
    }
    for s in range(1, 4):
        sd.update(
            {
                f"downsample_layers.{s}.0.weight": 1 + r(dims[s - 1]),
                f"downsample_layers.{s}.0.bias": r(dims[s - 1]),
                f"downsample_layers.{s}.1.weight": r(dims[s], dims[s - 1], 2, 2),
                f"downsample_layers.{s}.1.bias": r(dims[s]),
            }
        )
    for s, (n, d) in enumerate(zip(depths, dims)):
        for j in range(n):
            b = f"stages.{s}.{j}"
            sd.update(
                {
                    f"{b}.dwconv.weight": r(d, 1, 7, 7),
                    f"{b}.dwconv.bias": r(d),
                    f"{b}.norm.weight": 1 + r(d),
                    f"{b}.norm.bias": r(d),
                    f"{b}.pwconv1.weight": r(4 * d, d),
                    f"{b}.pwconv1.bias": r(4 * d),
                    f"{b}.grn.gamma": r(1, 1, 1, 4 * d),
                    f"{b}.grn.beta": r(1, 1, 1, 4 * d),
                    f"{b}.pwconv2.weight": r(d, 4 * d) * 0.5,
                    f"{b}.pwconv2.bias": r(d),
                }
            )
    return sd
