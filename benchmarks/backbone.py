"""Benchmark: our ConvNeXt-T backbone (rows 0-3 of yolov5_ConvNeXt.yaml) vs torchvision convnext_tiny().features.

    python benchmarks/backbone.py                      # 640x640, batch 1, CPU, 10 timed runs each
    python benchmarks/backbone.py --imgsz 320 --runs 5 --device 0

Both run the same random weights (torchvision's, loaded into ours through models.pretrained) in eval mode under
torch.inference_mode, interleaved run by run (alternating which goes first) so that background load hits both alike.
Prints median latencies, the
latency ratio (ours / torchvision), the parameter ratio and the max abs difference of the final feature maps.
Targets: both ratios <= 1.00.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn as nn
import torchvision

from benchmarks.common import alternating_ms
from models.pretrained import load_backbone_weights
from models.yolo import Model
from utils.core.device import select_device
from utils.core.errors import cli_main
from utils.core.log import LOGGER


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640, help="square input size")
    p.add_argument("--runs", type=int, default=10, help="timed runs per backbone (after 2 warm-up runs)")
    p.add_argument("--device", default="cpu", help="cpu or a cuda device, i.e. 0")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p.parse_args(argv)


def run(imgsz: int = 640, runs: int = 10, device: str = "cpu", threads: int = 0) -> dict[str, float]:
    """Time both backbones; returns ours_ms, torchvision_ms, latency_ratio, param_ratio, max_abs_diff."""
    if threads:
        torch.set_num_threads(threads)
    dev = select_device(device)
    torch.manual_seed(0)
    tv = torchvision.models.convnext_tiny(weights=None)
    model = Model("yolov5_ConvNeXt.yaml")
    load_backbone_weights(model, tv.state_dict())
    ours = nn.Sequential(*model.model[: model.backbone_rows]).to(dev).eval()
    ref = tv.features.to(dev).eval()
    x = torch.rand(1, 3, imgsz, imgsz, device=dev)
    with torch.inference_mode():
        diff = float((ours(x) - ref(x)).abs().max())
        for _ in range(2):  # warm-up: allocator, oneDNN / cuDNN algorithm choice
            ours(x), ref(x)
        ours_ms, ref_ms = alternating_ms(lambda: ours(x), lambda: ref(x), runs, dev)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    res = {
        "ours_ms": ours_ms,
        "torchvision_ms": ref_ms,
        "params_ours": n_ours,
        "params_torchvision": n_ref,
        "max_abs_diff": diff,
    }
    res["latency_ratio"] = res["ours_ms"] / res["torchvision_ms"]
    res["param_ratio"] = n_ours / n_ref
    LOGGER.info(
        f"ConvNeXt-T backbone, {imgsz}x{imgsz}, batch 1, {dev}, median of {runs} runs "
        f"({torch.get_num_threads()} threads)\n"
        f"  ours        {res['ours_ms']:8.1f} ms  {n_ours:,} params\n"
        f"  torchvision {res['torchvision_ms']:8.1f} ms  {n_ref:,} params\n"
        f"  latency ratio (ours / torchvision) {res['latency_ratio']:.3f}   target <= 1.00\n"
        f"  param ratio   (ours / torchvision) {res['param_ratio']:.3f}   target <= 1.00\n"
        f"  max |ours - torchvision| on the P5 features: {diff:.2e}"
    )
    return res


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
