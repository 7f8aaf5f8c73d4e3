"""Benchmark: our Conv2Former-T backbone (rows 0-3 of yolov5_Conv2Former-t.yaml) vs a reference given the same weights.

    python benchmarks/conv2former.py                             # vs the functional reference of the tests
    python benchmarks/conv2former.py --official ../Conv2Former   # vs the official model of a clone (needs timm)
    python benchmarks/conv2former.py --imgsz 320 --runs 5 --no-channels-last

The reference is the official model (`conv2former_t()` of models/conv2former.py in a clone of
github.com/HVision-NKU/Conv2Former, imported from that path) when --official is given, else the functional forward
written from the paper's equations in tests/reference_conv2former.py, run in float32. Both get the same random
non-trivial weights in the official layout: the reference as they are, ours through models.pretrained's
load_backbone_weights. Batch 1, eval, torch.inference_mode, runs alternating (ours, ref, ref, ours, ...) so that
background load hits both alike. Prints both medians, the latency ratio ours / reference (goal <= 1.0) and the max abs
difference of the P5 outputs. Ours runs channels-last, as detect and val run it (--no-channels-last: NCHW).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch
import torch.nn as nn

from benchmarks.common import alternating_ms
from models.pretrained import load_backbone_weights
from models.sizes import resolve_conv2former
from models.yolo import Model
from tests.reference_conv2former import classifier_shapes, official_shapes, random_official_state, reference_stages
from utils.core.errors import UserError, cli_main
from utils.core.log import LOGGER

Forward = Callable[[torch.Tensor], torch.Tensor]
_REPO = "github.com/HVision-NKU/Conv2Former"


def official_forward(clone: Path, sd: dict[str, torch.Tensor]) -> Forward:
    """The official Conv2Former-T's backbone (downsample_layers[i] then stages[i], i = 0..3) with sd loaded strictly."""
    # a module name of its own: 'models' is ours
    spec = importlib.util.spec_from_file_location("official_conv2former", check_clone(clone))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's @register_model looks its module up there
    spec.loader.exec_module(module)  # the clone's code, which the user pointed us at
    net = module.conv2former_t().eval()
    net.load_state_dict(sd, strict=True)

    def forward(x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = net.stages[i](net.downsample_layers[i](x))
        return x

    return forward


def check_clone(clone: Path) -> Path:
    """The clone's models/conv2former.py, checked before any work: it must exist and timm must be installed."""
    file = Path(clone) / "models" / "conv2former.py"
    if not file.is_file():
        raise UserError(f"--official {clone}: no models/conv2former.py there — pass a clone of {_REPO}")
    if importlib.util.find_spec("timm") is None:
        raise UserError(
            f"--official: {file} imports timm, which is not installed — pip install timm, or drop --official to "
            f"compare with the reference from the tests"
        )
    return file


def functional_forward(sd: dict[str, torch.Tensor], depths: list[int], kernel_size: int) -> Forward:
    """The tests' reference forward in float32 (the tests run it in float64 for exactness)."""
    return lambda x: reference_stages(sd, x, depths, kernel_size, dtype=torch.float32)[-1]


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", type=Path, help=f"a clone of {_REPO}: compare with its model (needs timm)")
    p.add_argument("--imgsz", type=int, default=640, help="square input size")
    p.add_argument("--runs", type=int, default=3, help="timed runs per backbone (after 1 warm-up run each)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="ours in NHWC")
    return p.parse_args(argv)


def run(
    official: Path | None = None, imgsz: int = 640, runs: int = 3, threads: int = 0, channels_last: bool = True
) -> dict[str, float | str]:
    """Time both on the CPU; returns ours_ms, reference_ms, latency_ratio, max_abs_diff, reference."""
    if runs < 1 or imgsz < 32 or imgsz % 32:
        raise UserError(f"--runs {runs} / --imgsz {imgsz}: need runs >= 1 and a multiple of 32 — e.g. --runs 3")
    if official:
        check_clone(official)
    if threads:
        torch.set_num_threads(threads)
    spec = resolve_conv2former("t")
    depths, dims, k = spec["depths"], spec["dims"], spec["kernel_size"]
    sd = random_official_state(official_shapes(depths, dims, k) | classifier_shapes(dims[-1]), seed=0)
    model = Model("yolov5_Conv2Former-t.yaml")
    load_backbone_weights(model, sd)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ours = nn.Sequential(*model.model[:4]).eval().to(memory_format=fmt)
    name = f"official ({official})" if official else "functional reference (tests/reference_conv2former.py)"
    ref = official_forward(official, sd) if official else functional_forward(sd, depths, k)
    x = torch.randn(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    x_ours = x.contiguous(memory_format=fmt)
    with torch.inference_mode():
        y_ours, y_ref = ours(x_ours), ref(x)  # warm-up: allocator, oneDNN primitives
        ours_ms, ref_ms = alternating_ms(lambda: ours(x_ours), lambda: ref(x), runs)
    res: dict[str, float | str] = {
        "reference": name,
        "ours_ms": ours_ms,
        "reference_ms": ref_ms,
        "max_abs_diff": float((y_ours.float() - y_ref.float()).abs().max()),
        "p5_max_abs": float(y_ref.abs().max()),
    }
    res["latency_ratio"] = res["ours_ms"] / res["reference_ms"]
    LOGGER.info(
        f"Conv2Former-T backbone, {imgsz}x{imgsz}, batch 1, CPU ({torch.get_num_threads()} threads), median of {runs} "
        f"alternating runs\n"
        f"  ours ({'NHWC' if channels_last else 'NCHW'}) {res['ours_ms']:9.1f} ms\n"
        f"  reference   {res['reference_ms']:9.1f} ms  {name}\n"
        f"  latency ratio (ours / reference) {res['latency_ratio']:.3f}   goal <= 1.00\n"
        f"  max |ours - reference| on P5: {res['max_abs_diff']:.2e} (P5 values up to {res['p5_max_abs']:.1f})"
    )
    return res


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
