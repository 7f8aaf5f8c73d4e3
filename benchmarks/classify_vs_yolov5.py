"""Classifier training side by side with an ultralytics/yolov5 clone's classify/: loader, training step, top-1.

    python benchmarks/classify_vs_yolov5.py                                         # our figures only
    python benchmarks/classify_vs_yolov5.py --yolov5 ../yolov5 --yolov5-pythonpath ../y5extra --pairs 3

Same architecture on both sides: ConvNeXt-T (torchvision's `convnext_tiny`, no pretrained weights, as YOLOv5's
classify/train.py builds it for `--model convnext_tiny --pretrained False`; ours: `convnext_tiny`), the same generated
image folder (data/scripts/make_shapes.generate_shapes_cls, --n training images per run and --n-val validation images,
64 px), each side with its own code and defaults:
- loader: each repo's classification dataloader with its training augmentation (--imgsz, --batch, --workers), images/s
  over --epochs epochs after an untimed one;
- step: forward + label-smoothed cross-entropy + backward + clipping + each train.py's optimizer (yolov5: Adam lr 0.001,
  decay 5e-5; ours: AdamW with no decay on norms/biases) + its EMA, on a fixed random batch (--step-imgsz,
  --step-batch), images/s of the median of --steps steps (ours in channels-last, as our trainer runs);
- top1: each repo's own classify/train.py for --train-epochs epochs on the folder; the best epoch's top-1 from its
  results.csv, and the wall time of the whole run.
Every measurement is a fresh subprocess, the sides alternating which runs first (AB, BA, ...); medians of --pairs
runs and the ratio ours / yolov5 (top-1 is shown as the two medians). Nothing of yolov5 is imported into this
process; its clone runs in its own subprocess with --yolov5-python and --yolov5-pythonpath (its extra packages:
requests, pandas, seaborn, ultralytics, ...). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the child imports each repo from its own root instead (see _side)

# standard library only, so safe to import in either child
from benchmarks.vs_yolov5 import add_clone_flags, loader_images_per_s, offline_env

PARTS = ("loader", "step", "top1")
UNITS = {"loader": "images/s", "step": "images/s", "top1": "top-1", "time": "s"}
MODEL = "convnext_tiny"


# ------------------------------------------------------------------------------------------------ child side
def _side(name: str, root: Path) -> SimpleNamespace:
    """The repo's own classification API; only its root goes on sys.path (both have `utils` and `models`)."""
    sys.path.insert(0, str(root))
    os.chdir(root)
    import torch

    if name == "yolov5":
        import torchvision

        from utils.dataloaders import create_classification_dataloader
        from utils.torch_utils import ModelEMA, reshape_classifier_output, smart_optimizer

        def model(nc: int) -> torch.nn.Module:
            m = torchvision.models.convnext_tiny(weights=None)
            reshape_classifier_output(m, nc)
            return m

        return SimpleNamespace(
            model=model,
            loader=lambda a: create_classification_dataloader(
                a.data, imgsz=a.imgsz, batch_size=a.batch, augment=True, workers=a.workers
            ),
            optimizer=lambda m: smart_optimizer(m, "Adam", 0.001, momentum=0.9, decay=5e-5),
            EMA=ModelEMA,
            nhwc=False,
            setup=lambda: None,  # glibc's default malloc settings, as its classify/train.py runs
        )
    from models.classifier import ClassificationModel
    from utils.core.host_memory import keep_freed_memory
    from utils.dataloaders.classify import create_classify_loader
    from utils.training.classify_options import ClassifyTrainOptions
    from utils.training.ema import ModelEMA
    from utils.training.optim import build_optimizer

    o = ClassifyTrainOptions()
    return SimpleNamespace(
        model=lambda nc: ClassificationModel(MODEL, nc=nc),
        loader=lambda a: create_classify_loader(
            a.data, a.imgsz, a.batch, augment=True, opts=o.augment(), workers=a.workers, normalize=False
        )[0],  # as classify/train.py loads: uint8, normalised on the device
        optimizer=lambda m: build_optimizer(m, o.optimizer, o.lr0, o.momentum, o.decay),
        EMA=ModelEMA,
        nhwc=o.channels_last,
        setup=keep_freed_memory,  # what our classify trainer sets up on a CPU
    )


def measure_loader(api: SimpleNamespace, a: argparse.Namespace) -> float:
    return loader_images_per_s(api.loader(a), a.epochs)


def measure_step(api: SimpleNamespace, a: argparse.Namespace) -> float:
    """Images/s of the median training step on a fixed random batch."""
    import torch

    api.setup()
    model = api.model(3)
    if api.nhwc:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt, ema = api.optimizer(model), api.EMA(model)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.step_batch, 3, a.step_imgsz, a.step_imgsz, generator=g)
    x = x.contiguous(memory_format=torch.channels_last) if api.nhwc else x
    y = torch.randint(0, 3, (a.step_batch,), generator=g)
    times = []
    for i in range(a.steps + 1):  # the first step is not timed (allocations, lazy init)
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        ema.update(model)
        if i:
            times.append(time.perf_counter() - t0)
    return a.step_batch / statistics.median(times)


def child(a: argparse.Namespace) -> None:
    api = _side(a.child, Path(a.root))
    value = {"loader": measure_loader, "step": measure_step}[a.part](api, a)
    print(json.dumps({"value": value}))


# ------------------------------------------------------------------------------------------------ parent side
def make_data(tmp: Path, n: int, n_val: int) -> Path:
    from data.scripts.make_shapes import generate_shapes_cls

    return Path(generate_shapes_cls(tmp / "shapes-cls", n_train=n, n_val=n_val, imgsz=64, seed=0))


def best_top1(results_csv: Path) -> float:
    """The highest metrics/accuracy_top1 of a results.csv (both repos write that column; headers may be padded)."""
    with open(results_csv, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    col = rows[0].index("metrics/accuracy_top1")
    return max(float(r[col]) for r in rows[1:])


def _env(side: str, a: argparse.Namespace, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if side == "yolov5":
        env.update(offline_env(str(tmp)))  # its train.py would download Arial.ttf otherwise
        if a.yolov5_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [a.yolov5_pythonpath, env.get("PYTHONPATH", "")]))
    return env


def train_top1(side: str, python: str, root: Path, data: Path, a: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """(best top-1, wall seconds) of one classify/train.py run of that side."""
    project = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [python, str(root / "classify" / "train.py"), "--model", MODEL, "--data", str(data), "--epochs",
           str(a.train_epochs), "--img", str(a.imgsz), "--batch-size", str(a.batch), "--workers", str(a.workers),
           "--project", str(project), "--name", "exp", "--device", "cpu"]  # fmt: skip
    cmd += ["--pretrained", "False"] if side == "yolov5" else []
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(side, a, tmp), cwd=str(root))
    seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{side} classify/train.py failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return best_top1(project / "exp" / "results.csv"), seconds


def run_one(side: str, part: str, python: str, root: Path, data: Path, a: argparse.Namespace, tmp: Path) -> list:
    if part == "top1":
        top1, seconds = train_top1(side, python, root, data, a, tmp)
        print(f"  top1   {side:6s} {top1:9.3f} in {seconds:.0f} s", flush=True)
        return [top1, seconds]
    cmd = [python, str(Path(__file__).resolve()), "--child", side, "--part", part, "--root", str(root), "--data",
           str(data / "train"), "--imgsz", str(a.imgsz), "--batch", str(a.batch), "--workers", str(a.workers),
           "--epochs", str(a.epochs), "--steps", str(a.steps), "--step-imgsz", str(a.step_imgsz), "--step-batch",
           str(a.step_batch)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(side, a, tmp))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        sys.exit(f"{side} {part} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    value = json.loads(lines[-1])["value"]
    print(f"  {part:6s} {side:6s} {value:9.2f} {UNITS[part]}", flush=True)
    return [value]


def measure_all(a: argparse.Namespace, data: Path, tmp: Path) -> dict[str, dict[str, list]]:
    sides = {"ours": (sys.executable, ROOT)}
    if a.yolov5:
        sides["yolov5"] = (a.yolov5_python or sys.executable, Path(a.yolov5).resolve())
    res: dict[str, dict[str, list]] = {p: {s: [] for s in sides} for p in a.parts}
    for k in range(a.pairs):
        order = list(sides) if k % 2 == 0 else list(sides)[::-1]
        print(f"pair {k + 1}/{a.pairs}: {' then '.join(order)}", flush=True)
        for part in a.parts:
            if part == "top1" and k >= a.train_pairs:
                continue
            for side in order:
                python, root = sides[side]
                res[part][side].append(run_one(side, part, python, root, data, a, tmp))
    return res


def table(res: dict[str, dict[str, list]], a: argparse.Namespace) -> str:
    what = {
        "loader": f"training loader ({a.imgsz} px, batch {a.batch}, {a.workers} workers, {a.n} images of 64 px)",
        "step": f"train step ConvNeXt-T ({a.step_imgsz} px, batch {a.step_batch}, fwd+loss+bwd+clip+opt+EMA)",
        "top1": f"classify/train.py ConvNeXt-T from scratch, {a.train_epochs} epochs at {a.imgsz} px: best top-1 / s",
    }
    two = "yolov5" in next(iter(res.values()))
    head = "| figure | ours (median) |" + (" yolov5 (median) | ratio ours / yolov5 |" if two else "")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for part, by_side in res.items():
        med = {s: [statistics.median(x[i] for x in v) for i in range(len(v[0]))] for s, v in by_side.items() if v}
        cells = [" / ".join(f"{x:.3g}" for x in m) for m in med.values()]
        row = f"| {what[part]} ({UNITS[part]}{', s' if part == 'top1' else ''}) | " + " | ".join(cells) + " |"
        if two:
            o, y = med["ours"], med["yolov5"]
            row += f" {o[0] / y[0]:.2f}" + (f" (time {o[1] / y[1]:.2f})" if part == "top1" else "") + " |"
        rows.append(row)
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_clone_flags(p)
    p.add_argument("--yolov5-pythonpath", default="", help="extra PYTHONPATH for the yolov5 side (its packages)")
    p.add_argument("--pairs", type=int, default=3, help="runs per side of loader and step (>= 3 for a median)")
    p.add_argument("--train-pairs", type=int, default=1, help="classify/train.py runs per side for top-1")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--n", type=int, default=600, help="generated training images (64 px)")
    p.add_argument("--n-val", type=int, default=150, help="generated validation images")
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="timed loader epochs per run")
    p.add_argument("--steps", type=int, default=5, help="timed train steps per run")
    p.add_argument("--step-imgsz", type=int, default=224)
    p.add_argument("--step-batch", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=10, help="epochs of each classify/train.py run")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--part", default="", help=argparse.SUPPRESS)
    p.add_argument("--root", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.parts = [x for x in a.parts.split(",") if x]
    if not set(a.parts) <= set(PARTS) or a.pairs < 1 or a.train_pairs < 1:
        p.error(f"--parts takes a subset of {','.join(PARTS)}; --pairs and --train-pairs must be >= 1")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.child:
        return child(a)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.n, a.n_val)
        print(table(measure_all(a, data, Path(tmp)), a))


if __name__ == "__main__":
    main()
