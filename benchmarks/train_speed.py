"""What each training-step speed option buys: batched optimizer/EMA kernels, channels-last, torch.compile.

    python benchmarks/train_speed.py                               # yolov5s, 320 px, batch 8, CPU
    python benchmarks/train_speed.py --cfg yolov5_ConvNeXt.yaml --variants loop batched channels-last
    python benchmarks/train_speed.py --variants loop batched compile --device 0

Each variant is one full training step as utils/training/trainer.py runs it (forward, loss, backward, unscale, clip,
optimizer step, EMA update) on a fixed random batch. Every (variant, repeat) runs in a fresh process, in alternating
order (forward, then reversed), and the table shows the median step time over repeats and the ratio to `loop`:
- loop:           PyTorch's per-tensor optimizer and a per-tensor EMA (the code before this option existed; YOLOv5's);
- batched:        foreach (CPU) / fused (CUDA) optimizer kernels and the foreach EMA, NCHW
                  (train.py --no-channels-last);
- channels-last:  batched + NHWC weights and batches;
- kept-memory:    batched + glibc malloc keeps freed memory (utils/core/host_memory.py; CPU only);
- channels-last+kept-memory: both — what train.py does on a CPU by default;
- compile:        batched + torch.compile of the forward (train.py --compile; its compile time is reported apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

import utils.training.optim as optim
from benchmarks.reference import LoopEMA
from benchmarks.train_step import HYP, random_batch
from benchmarks.train_step import step as train_step
from models.yolo import Model
from utils.core.device import select_device
from utils.core.host_memory import keep_freed_memory
from utils.core.timing import Profile
from utils.training.compiled import CompiledForward
from utils.training.ema import ModelEMA
from utils.training.loss import ComputeLoss, scale_loss_gains

VARIANTS = (
    "loop",
    "batched",
    "channels-last",
    "kept-memory",
    "channels-last+kept-memory",
    "compile",
    "channels-last+compile",
)


def build(variant: str, cfg: str, imgsz: int, dev: torch.device) -> tuple:
    """(forward, model, loss, optimizer, EMA, scaler, memory format) for one variant."""
    fmt = torch.channels_last if "channels-last" in variant else torch.contiguous_format
    if "kept-memory" in variant and dev.type == "cpu":  # before the first tensor of the step, as the Trainer does
        keep_freed_memory()
    model = Model(cfg, nc=80).to(dev).to(memory_format=fmt).train()
    model.hyp = scale_loss_gains(HYP, model.model[-1].nl, 80, imgsz)
    if variant == "loop":  # what PyTorch does by default on CPU: the per-tensor for-loop
        optim.step_implementation = lambda params: {"foreach": False}
    opt = optim.build_optimizer(model, "SGD", 0.01, 0.937, 5e-4)
    ema = LoopEMA(model) if variant == "loop" else ModelEMA(model)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    return CompiledForward(model, "compile" in variant), model, ComputeLoss(model), opt, ema, scaler, fmt


def step(parts: tuple, imgs: torch.Tensor, targets: torch.Tensor) -> None:
    """One optimizer step of utils/trainer.Trainer._step (accumulate = 1), with this variant's forward and EMA."""
    forward, model, loss_fn, opt, ema, scaler, _ = parts
    train_step((model, loss_fn, opt, scaler), imgs, targets, forward=forward, ema=ema)


def child(a: argparse.Namespace) -> dict:
    """Median step time of one variant in this process; the first step (compilation, allocator) is timed apart."""
    dev = select_device(a.device)
    parts = build(a.child, a.cfg, a.imgsz, dev)
    imgs, targets = random_batch(a.batch_size, a.imgsz, dev)
    imgs = imgs.contiguous(memory_format=parts[-1])
    timer = Profile(dev)
    with timer:
        step(parts, imgs, targets)
    first = timer.dt
    times = []
    for _ in range(a.steps + 1):  # one more warm-up step, untimed
        with timer:
            step(parts, imgs, targets)
        times.append(timer.dt)
    return {"variant": a.child, "step_s": statistics.median(times[1:]), "first_s": first, "compiled": parts[0].active}


def run_child(variant: str, a: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--cfg",
        a.cfg,
        "--imgsz",
        str(a.imgsz),
        "--batch-size",
        str(a.batch_size),
        "--steps",
        str(a.steps),
        "--device",
        a.device,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(a: argparse.Namespace) -> dict[str, float]:
    res: dict[str, list[dict]] = {v: [] for v in a.variants}
    for r in range(a.repeats):
        for v in a.variants if r % 2 == 0 else a.variants[::-1]:  # alternate so drifting load hits all alike
            res[v].append(run_child(v, a))
    base = statistics.median(x["step_s"] for x in res[a.variants[0]])
    print(
        f"\n{a.cfg}, {a.imgsz} px, batch {a.batch_size}, {a.device}, median of {a.repeats} runs x {a.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'variant':24s} {'ms/step':>9s} {'images/s':>9s} {'vs ' + a.variants[0]:>10s}  runs (ms)  first step")
    medians = {}
    for v, xs in res.items():
        med = statistics.median(x["step_s"] for x in xs)
        medians[v] = med
        note = "" if all(x["compiled"] for x in xs) or "compile" not in v else " (compile fell back to eager)"
        runs = "/".join(f"{x['step_s'] * 1e3:.0f}" for x in xs)
        print(
            f"{v:24s} {med * 1e3:9.1f} {a.batch_size / med:9.2f} {base / med:9.2f}x  {runs}  "
            f"{statistics.median(x['first_s'] for x in xs):.1f} s{note}"
        )
    return medians


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant (fresh processes, alternating)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["loop", "batched", "channels-last", "channels-last+kept-memory"],
        choices=VARIANTS,
        help="the first is the baseline of the ratios",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    opt = parse_opt()
    if opt.child:
        print(json.dumps(child(opt)))
    else:
        main(opt)
