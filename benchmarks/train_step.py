"""Training-step throughput: images/s of forward + loss + backward + optimizer step, yolov5s vs ConvNeXt-T.

    python benchmarks/train_step.py                  # 320 px, batch 8, CPU (or --device 0)
    python benchmarks/train_step.py --steps 5 --device 0

Both models run in the same process, alternating, on the same random batch and targets; the ratio
ConvNeXt-T / yolov5s is what to compare across machines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from models.yolo import Model
from utils.core.device import select_device
from utils.core.files import yaml_load
from utils.core.timing import Profile
from utils.training.loss import ComputeLoss, scale_loss_gains
from utils.training.optim import build_optimizer

CONFIGS = {"yolov5s": "yolov5s.yaml", "ConvNeXt-T": "yolov5_ConvNeXt.yaml"}
HYP = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")  # YOLOv5's default recipe: the loss gains


def make_setup(cfg: str, imgsz: int, device: torch.device) -> tuple:
    """(model, loss, optimizer, amp scaler) for one config, SGD as in YOLOv5's default recipe."""
    model = Model(cfg, nc=80).to(device).train()
    model.hyp = scale_loss_gains(HYP, model.model[-1].nl, 80, imgsz)
    opt = build_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    return model, ComputeLoss(model), opt, scaler


def step(
    setup: tuple, imgs: torch.Tensor, targets: torch.Tensor, forward: Callable | None = None, ema: Any = None
) -> None:
    """One full training step (utils/trainer.Trainer._step with accumulate 1); forward defaults to the model, the
    EMA update runs when an EMA is given (benchmarks/train_speed.py measures both)."""
    model, loss_fn, opt, scaler = setup
    with torch.autocast("cuda", enabled=imgs.device.type == "cuda"):
        loss, _ = loss_fn((forward or model)(imgs), targets)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    if ema is not None:
        ema.update(model)


def random_batch(batch: int, imgsz: int, device: torch.device, per_image: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image batch and targets rows [i, cls, cx, cy, w, h] (normalised)."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    n = batch * per_image
    t = torch.zeros(n, 6)
    t[:, 0] = torch.arange(batch).repeat_interleave(per_image)
    t[:, 1] = torch.randint(0, 80, (n,), generator=g)
    t[:, 2:4] = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    t[:, 4:6] = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return imgs.to(device), t.to(device)


def run(imgsz: int = 320, batch_size: int = 8, steps: int = 3, warmup: int = 1, device: str = "cpu") -> dict:
    """images/s per config and the ConvNeXt-T / yolov5s ratio; rounds alternate between the models."""
    dev = select_device(device)
    imgs, targets = random_batch(batch_size, imgsz, dev)
    setups = {k: make_setup(v, imgsz, dev) for k, v in CONFIGS.items()}
    for s in setups.values():
        for _ in range(warmup):
            step(s, imgs, targets)
    timers = {k: Profile(dev) for k in setups}
    for _ in range(steps):
        for k, s in setups.items():  # alternate so background load hits both alike
            with timers[k]:
                step(s, imgs, targets)
    total = {k: timer.t for k, timer in timers.items()}
    ips = {k: steps * batch_size / total[k] for k in setups}
    for k, v in ips.items():
        print(
            f"{k:12s} {v:8.2f} images/s  ({total[k] / steps * 1e3:.0f} ms/step, batch {batch_size}, {imgsz}px, {dev})"
        )
    ratio = ips["ConvNeXt-T"] / ips["yolov5s"]
    print(f"ratio ConvNeXt-T / yolov5s: {ratio:.3f}")
    return {**ips, "ratio": ratio}


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    p.add_argument("--device", default="cpu")
    return p.parse_args()


if __name__ == "__main__":
    from utils.core.errors import cli_main

    cli_main(lambda: run(**vars(parse_opt())))
