"""Side by side with an ultralytics/yolov5 clone: training loader, one training step, train.py epochs, inference.

    python benchmarks/vs_yolov5.py                                   # our figures only
    python benchmarks/vs_yolov5.py --yolov5 ../yolov5                # + a yolov5 clone, run with this python
    python benchmarks/vs_yolov5.py --yolov5 ../yolov5 --yolov5-python ../y5venv/bin/python --pairs 5

Both sides use their own code on the same generated data (shapes, 400 images of 256 px, hard-linked into one tree per
side so their label caches do not collide): the loader is each repo's create_dataloader with its own
hyp.scratch-low.yaml (mosaic on), 640 px, batch 16, 2 workers, one untimed epoch then --epochs timed ones; the step is
Model(yolov5s.yaml) forward + ComputeLoss + backward + clipping + each repo's SGD groups + its EMA at 320 px, batch 8
on a fixed random batch, each set up as its train.py is (ours: channels-last unless --nchw, and the malloc thresholds
of utils/core/host_memory unless --default-malloc; yolov5: NCHW and glibc's defaults, or with --yolov5-malloc our
thresholds through glibc's MALLOC_* variables); the epoch part runs each repo's own train.py (yolov5s from scratch,
320 px, batch 16, --noval) and reads the seconds of each epoch after the first from its progress bar; the inference is
the fused yolov5s at 640 px, batch 1. Every measurement is a fresh subprocess (yours, then theirs, in alternating
order: AB, BA, AB, ...); the table has the median of each side over --pairs runs and the ratio ours / yolov5 (of the
medians, and the median of the per-pair ratios). Nothing is downloaded and nothing of yolov5 is imported into this
process: its clone only runs in its own subprocess, with --yolov5-python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("loader", "step", "infer", "epoch")
UNITS = {"loader": "images/s", "step": "images/s", "infer": "images/s", "epoch": "s/epoch"}


# ------------------------------------------------------------------------------------------------ child side
def _side(name: str, root: Path) -> SimpleNamespace:
    """The repo's own API. Only its root goes on sys.path: both repos have a top-level `utils` and `models`."""
    sys.path.insert(0, str(root))
    os.chdir(root)  # yolov5 resolves some paths against the working directory
    if name == "yolov5":  # each side's train.py optimizer and EMA, so the step is the step its train.py runs
        from models.yolo import Model
        from utils.dataloaders import create_dataloader
        from utils.loss import ComputeLoss
        from utils.torch_utils import ModelEMA, smart_optimizer

        sgd = lambda m: smart_optimizer(m, "SGD", 0.01, 0.937, 5e-4)  # noqa: E731
        nhwc = False  # yolov5's train.py keeps PyTorch's default NCHW layout
        process_setup = lambda: None  # noqa: E731 — and glibc's default malloc settings
    else:
        from models.yolo import Model
        from utils.core.host_memory import keep_freed_memory
        from utils.dataloaders.dataset import create_dataloader
        from utils.training.ema import ModelEMA
        from utils.training.loss import ComputeLoss
        from utils.training.optim import build_optimizer
        from utils.training.train_options import TrainOptions

        sgd = lambda m: build_optimizer(m, "SGD", 0.01, 0.937, 5e-4)  # noqa: E731
        nhwc = TrainOptions.channels_last  # the layout our train.py trains in by default
        process_setup = keep_freed_memory  # what our Trainer and DetectBackend set up on a CPU
    return SimpleNamespace(
        Model=Model,
        create_dataloader=create_dataloader,
        ComputeLoss=ComputeLoss,
        sgd=sgd,
        nhwc=nhwc,
        process_setup=process_setup,
        EMA=ModelEMA,
        hyp=root / "data" / "hyps" / "hyp.scratch-low.yaml",
        cfg=root / "models" / "yolov5s.yaml",
    )


def _hyp(api: SimpleNamespace) -> dict:
    """The repo's own hyp.scratch-low.yaml (augmentation for the loader, loss gains for the step)."""
    import yaml

    return yaml.safe_load(api.hyp.read_text())


def loader_images_per_s(loader: Iterable, epochs: int) -> float:
    """Images/s of a training loader over `epochs` epochs after one untimed epoch (worker start-up, first reads,
    label cache). Standard library only, so that benchmarks/dataloader.py measures its loaders with it too (this
    module cannot import a shared one: its yolov5 child has only the clone on sys.path)."""
    for _ in loader:
        pass
    t0, n = time.perf_counter(), 0
    for _ in range(epochs):
        for imgs, *_ in loader:
            n += len(imgs)
    return n / (time.perf_counter() - t0)


def measure_loader(api: SimpleNamespace, a: argparse.Namespace) -> float:
    """Images/s of the augmenting loader over --epochs epochs after one warm-up epoch (workers, label cache)."""
    loader, _ = api.create_dataloader(
        a.data, a.imgsz, a.batch, 32, hyp=_hyp(api), augment=True, workers=a.workers, shuffle=True, seed=0
    )
    return loader_images_per_s(loader, a.epochs)


def _random_batch(batch: int, imgsz: int) -> tuple:
    """Fixed random images and 8 targets per image [i, cls, cx, cy, w, h]."""
    import torch

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(batch, 3, imgsz, imgsz, generator=g)
    n = batch * 8
    t = torch.zeros(n, 6)
    t[:, 0] = torch.arange(batch).repeat_interleave(8)
    t[:, 1] = torch.randint(0, 80, (n,), generator=g).float()
    t[:, 2:4] = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    t[:, 4:6] = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    return imgs, t


def measure_step(api: SimpleNamespace, a: argparse.Namespace) -> float:
    """Images/s of one training step of yolov5s as each train.py runs it: forward + loss + backward + gradient
    clipping + that repo's SGD parameter groups + its EMA update (median step time of --steps)."""
    import torch

    fmt = torch.channels_last if api.nhwc and not a.nchw else torch.contiguous_format
    model = api.Model(str(api.cfg), nc=80).to(memory_format=fmt).train()
    model.hyp = _hyp(api)  # loss gains as each train.py starts from (the time does not depend on them)
    loss_fn, opt, ema = api.ComputeLoss(model), api.sgd(model), api.EMA(model)
    imgs, targets = _random_batch(a.step_batch, a.step_imgsz)
    imgs = imgs.contiguous(memory_format=fmt)
    times = []
    for _i in range(a.steps + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        loss, _ = loss_fn(model(imgs), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        opt.step()
        opt.zero_grad()
        ema.update(model)
        times.append(time.perf_counter() - t0)
    return a.step_batch / statistics.median(times[2:])


def measure_infer(api: SimpleNamespace, a: argparse.Namespace) -> float:
    """Images/s of the fused yolov5s in eval mode, batch 1 (median of --steps forwards), in the layout each repo's
    detect.py runs it (ours NHWC weights, the input as given)."""
    import torch

    model = api.Model(str(api.cfg), nc=80).fuse().eval()
    if api.nhwc and not a.nchw:  # our DetectBackend runs a .pt in channels-last
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, a.imgsz, a.imgsz, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for _ in range(a.steps + 2):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1 / statistics.median(times[2:])


EPOCH_BAR = re.compile(r"^\s*(\d+)/\d+\s.*100%")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _seconds(clock: str) -> float:
    """'12.3s', '0:12', '1:02:03' -> seconds."""
    if clock.endswith("s"):
        return float(clock[:-1])
    secs = 0.0
    for part in clock.split(":"):
        secs = secs * 60 + float(part)
    return secs


def epoch_times(log: str) -> list[float]:
    """Seconds per training epoch from a train.py log: the elapsed time of each epoch's finished progress bar. Both
    repos print `epoch/last` first on the bar (validation bars start with "Class"); ours is tqdm's
    `[elapsed<remaining, rate]`, recent yolov5 clones end the bar with the elapsed time (`2/2 7.9s/it 15.7s`)."""
    done: dict[int, float] = {}
    for seg in re.split(r"[\r\n]", ANSI.sub("", log)):
        m = EPOCH_BAR.match(seg)
        if not m:
            continue
        tq = re.search(r"\[([\d:]+)<", seg)
        done[int(m.group(1))] = _seconds(tq.group(1) if tq else seg.split()[-1])
    return [done[k] for k in sorted(done)]


def offline_env(tmp: str) -> dict[str, str]:
    """yolov5's train.py downloads Arial.ttf into its config dir unless one is there: point that dir at tmp and put
    matplotlib's DejaVuSans there under that name, so nothing is fetched (our side ignores the variable)."""
    import shutil

    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copy(font, Path(tmp) / name)
    return {"YOLOV5_CONFIG_DIR": tmp}


def measure_epoch(api: SimpleNamespace, a: argparse.Namespace) -> float:
    """Median seconds per epoch (after the first) of this repo's own train.py: yolov5s from scratch on the data."""
    import tempfile

    root = Path(a.root)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.yaml"
        data.write_text(
            f"path: {Path(a.data).parents[1]}\ntrain: images/train\nval: images/train\nnc: 3\n"
            f"names: [circle, rectangle, triangle]\n"
        )
        cmd = [
            sys.executable,
            str(root / "train.py"),
            "--data",
            str(data),
            "--cfg",
            str(api.cfg),
            "--weights",
            "",
            "--hyp",
            str(api.hyp),
            "--epochs",
            str(a.train_epochs),
            "--batch-size",
            str(a.batch),
            "--img",
            str(a.epoch_imgsz),
            "--workers",
            str(a.workers),
            "--optimizer",
            "SGD",
            "--noval",
            "--noplots",
            "--device",
            "cpu",
            "--project",
            tmp,
            "--name",
            "run",
        ]
        cmd += ["--no-channels-last"] if a.child == "ours" and a.nchw else []
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env={**os.environ, **offline_env(tmp)})
    times = epoch_times(r.stdout + r.stderr)
    if r.returncode or len(times) < a.train_epochs:
        raise SystemExit(f"train.py failed or printed {len(times)} epochs (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return statistics.median(times[1:])


def child(a: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; the result is the last stdout line, as JSON."""
    api = _side(a.child, Path(a.root))
    if a.part != "epoch":  # as train.py / detect.py set up their process (the epoch part runs train.py itself);
        api.process_setup()  # --default-malloc reaches it as an environment variable it respects
    value = {"loader": measure_loader, "step": measure_step, "infer": measure_infer, "epoch": measure_epoch}[a.part](
        api, a
    )
    import torch

    print(json.dumps({"side": a.child, "part": a.part, "value": value, "threads": torch.get_num_threads()}))


# ------------------------------------------------------------------------------------------------ parent side
def make_data(tmp: Path, n: int, sides: list[str]) -> dict[str, Path]:
    """Shapes images + labels generated once, hard-linked into one images/ + labels/ tree per side."""
    sys.path.insert(0, str(ROOT))
    from data.scripts.make_shapes import generate_shapes

    src = generate_shapes(tmp / "shapes", n_train=n, n_val=0)
    out = {}
    for side in sides:
        for sub in ("images", "labels"):
            for f in (src / sub / "train").iterdir():
                dst = tmp / side / sub / "train" / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, dst)
        out[side] = tmp / side / "images" / "train"
    return out


def run_one(side: str, part: str, python: str, root: Path, data: Path, a: argparse.Namespace) -> float:
    """Run one measurement subprocess and return its figure (its output is shown when it fails)."""
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--child",
        side,
        "--part",
        part,
        "--root",
        str(root),
        "--data",
        str(data),
        "--imgsz",
        str(a.imgsz),
        "--batch",
        str(a.batch),
        "--workers",
        str(a.workers),
        "--epochs",
        str(a.epochs),
        "--steps",
        str(a.steps),
        "--step-imgsz",
        str(a.step_imgsz),
        "--step-batch",
        str(a.step_batch),
        "--epoch-imgsz",
        str(a.epoch_imgsz),
        "--train-epochs",
        str(a.train_epochs),
    ]
    cmd += ["--nchw"] if a.nchw else []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if side == "ours" and a.default_malloc:  # any allocator variable makes utils/core/host_memory leave malloc alone
        env["GLIBC_TUNABLES"] = ""
    if side == "yolov5" and a.yolov5_malloc:  # the thresholds utils/core/host_memory sets, given to glibc at start
        from utils.core.host_memory import as_environment  # this (parent) process: ROOT is on sys.path (make_data)

        env.update(as_environment())
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        sys.exit(f"{side} {part} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    out = json.loads(lines[-1])
    print(f"  {part:6s} {side:6s} {out['value']:9.2f} {UNITS[part]} ({out['threads']} torch threads)", flush=True)
    return out["value"]


def measure_all(a: argparse.Namespace, data: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """{part: {side: [figures]}}, the sides alternating which runs first from one pair to the next."""
    sides = {"ours": (sys.executable if not a.python else a.python, ROOT)}
    if a.yolov5:
        sides["yolov5"] = (a.yolov5_python or sys.executable, Path(a.yolov5).resolve())
    res = {p: {s: [] for s in sides} for p in a.parts}
    for k in range(a.pairs):
        order = list(sides) if k % 2 == 0 else list(sides)[::-1]
        print(f"pair {k + 1}/{a.pairs}: {' then '.join(order)}", flush=True)
        for part in a.parts:
            for side in order:
                python, root = sides[side]
                res[part][side].append(run_one(side, part, python, root, data[side], a))
    return res


def table(res: dict[str, dict[str, list[float]]], a: argparse.Namespace) -> str:
    """Markdown table: per part the median of each side, the range, and the ratios ours / yolov5."""
    what = {
        "loader": f"training loader (mosaic, hyp.scratch-low, {a.imgsz} px, batch {a.batch}, {a.workers} workers, "
        f"{a.n} images of 256 px)",
        "step": f"train step yolov5s ({a.step_imgsz} px, batch {a.step_batch}, fwd+loss+bwd+clip+SGD+EMA)",
        "infer": f"fused yolov5s inference ({a.imgsz} px, batch 1)",
        "epoch": f"train.py epoch, yolov5s from scratch ({a.epoch_imgsz} px, batch {a.batch}, {a.workers} workers, "
        f"SGD, hyp.scratch-low, {a.n} images; median of epochs 2-{a.train_epochs})",
    }
    two = "yolov5" in next(iter(res.values()))
    head = "| figure | ours (median, range) |" + (
        " yolov5 (median, range) | ratio of medians | median of pair ratios |" if two else ""
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for part, by_side in res.items():
        cells = [f"{statistics.median(v):.3g} ({min(v):.3g}–{max(v):.3g}) {UNITS[part]}" for v in by_side.values()]
        row = f"| {what[part]} | " + " | ".join(cells) + " |"
        if two:
            ours, y5 = by_side["ours"], by_side["yolov5"]
            pair = statistics.median(o / y for o, y in zip(ours, y5))
            row += f" {statistics.median(ours) / statistics.median(y5):.2f} | {pair:.2f} |"
        rows.append(row)
    return "\n".join(rows)


def add_clone_flags(p: argparse.ArgumentParser) -> None:
    """--yolov5 and --yolov5-python, as every side-by-side benchmark names them."""
    p.add_argument("--yolov5", default="", help="path of an ultralytics/yolov5 clone (default: ours only)")
    p.add_argument("--yolov5-python", default="", help="python for the yolov5 side (default: this one)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_clone_flags(p)
    p.add_argument("--python", default="", help="python for our side (default: this one)")
    p.add_argument("--pairs", type=int, default=3, help="runs per side (>= 3 for a median)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--n", type=int, default=400, help="generated images")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="timed loader epochs per run")
    p.add_argument("--steps", type=int, default=10, help="timed train steps / forwards per run")
    p.add_argument("--step-imgsz", type=int, default=320)
    p.add_argument("--step-batch", type=int, default=8)
    p.add_argument("--epoch-imgsz", type=int, default=320, help="image size of the epoch part")
    p.add_argument("--train-epochs", type=int, default=3, help="epochs per train.py run (the first is not counted)")
    p.add_argument(
        "--nchw", action="store_true", help="our side in NCHW (step, infer; epoch: train.py --no-channels-last)"
    )
    p.add_argument("--default-malloc", action="store_true", help="our side with glibc's default malloc thresholds")
    p.add_argument("--yolov5-malloc", action="store_true", help="yolov5's side with our malloc thresholds (env vars)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument("--part", default="", help=argparse.SUPPRESS)
    p.add_argument("--root", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.parts = [x for x in a.parts.split(",") if x]
    if not set(a.parts) <= set(PARTS) or a.pairs < 1:
        p.error(f"--parts takes a subset of {','.join(PARTS)}; --pairs must be >= 1")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.child:
        return child(a)
    if a.yolov5 and not (Path(a.yolov5) / "utils" / "dataloaders.py").is_file():
        sys.exit(f"--yolov5 {a.yolov5}: not an ultralytics/yolov5 clone (no utils/dataloaders.py)")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), a.n, ["ours", "yolov5"] if a.yolov5 else ["ours"])
        res = measure_all(a, data)
    print(f"\n{os.cpu_count()} CPUs; {a.pairs} runs per side, alternating which side runs first\n")
    print(table(res, a))


if __name__ == "__main__":
    main()
