"""Benchmark: one trained checkpoint in every export format — file size, mAP50-95 and inference speed side by side.

    python benchmarks/formats.py --weights runs/train/exp/weights/best.pt --data data/shapes.yaml --img 320
    python benchmarks/formats.py --weights best.pt --formats pt onnx --runs 5 --device cpu

Exports a copy of --weights (in a temporary folder; the weights' own folder is left alone) with export.py to
pt (our plain checkpoint, the PyTorch baseline), torchscript, onnx, openvino and openvino_int8 (export.py --int8,
calibrated on 300 images of --data's train split) at one fixed input shape, then
1. validates each with val.run on the same square letterboxed batches (what val.py gives a fixed-shape export), so
   the mAP column differs only by the format; val.py's own rect batches for the .pt are printed below the table;
2. times the model forward (DetectBackend, batch 1, the first val image letterboxed): one warmup call per format,
   then --runs rounds, each timing every format for --iters calls (after one untimed call) in a rotated order so
   background load hits all formats alike; ms/image is the median of the rounds' means. Speed vs PyTorch =
   pt ms / format ms.
A format whose package is missing (onnxruntime, openvino, nncf) gets a row saying so instead of numbers.

--threads N gives every runtime the same N CPU threads (torch.set_num_threads, onnxruntime intra-op threads, OpenVINO
INFERENCE_NUM_THREADS). On a machine busier than its cores, PyTorch's OpenMP threads wait on each other: measured
1546 ms per 320 px image with 2 threads vs 93 ms with 1 (ConvNeXt-atto, load average 7 on 2 cores), so compare
formats there with --threads 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

import export
import val
from models.checkpoint import load_checkpoint_model
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import UserError, cli_main, first_line
from utils.core.log import LOGGER
from utils.core.timing import Profile
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import create_dataloader
from utils.inference.backend import DetectBackend

FORMATS = ("pt", "torchscript", "onnx", "openvino", "openvino_int8")  # pt first: the baseline of the speed column
LABELS = {
    "pt": "PyTorch",
    "torchscript": "TorchScript",
    "onnx": "ONNX",
    "openvino": "OpenVINO",
    "openvino_int8": "OpenVINO INT8",
}


@dataclass
class Row:
    """One format's results (None where it could not run; note says why)."""

    fmt: str
    path: Path | None = None
    size_mb: float | None = None
    map5095: float | None = None
    ms: float | None = None
    note: str = ""


def check_opts(
    weights: str | None,
    formats: list[str] | tuple[str, ...],
    imgsz: int,
    batch_size: int,
    runs: int,
    iters: int,
    device: str,
) -> str:
    """Every flag, checked before anything is exported; returns the device spec."""
    if not weights:
        raise UserError(
            "no --weights given — train a model first (python train.py writes "
            "runs/train/exp/weights/best.pt), then pass --weights runs/train/exp/weights/best.pt"
        )
    if not Path(weights).is_file():
        raise UserError(
            f"--weights {weights}: file not found — check the path (trained weights are in runs/train/*/weights/)"
        )
    for f in formats:
        A.check_choice("formats", f, FORMATS)
    A.check_imgsz(imgsz, counts=(1,))
    A.check_int("batch_size", batch_size, lo=1, todo="e.g. --batch-size 32")
    A.check_int("runs", runs, lo=3, todo="a median needs at least 3 rounds, e.g. --runs 5")
    A.check_int("iters", iters, lo=1, todo="e.g. --iters 10")
    return check_device(device)


def export_all(weights: Path, formats: list[str], imgsz: int, workdir: Path, device: str, data: str) -> list[Row]:
    """A copy of weights exported to each format; a format that cannot be written keeps its reason. openvino_int8
    is export.py --include openvino --int8, calibrated on data's train split."""
    src = workdir / weights.name
    shutil.copy(weights, src)
    rows = []
    for fmt in formats:  # one export call per format, so one missing package costs only its own row
        int8 = fmt == "openvino_int8"
        opts = dict(include=["openvino"], int8=True, data=data) if int8 else dict(include=[fmt])
        try:
            path = next(iter(export.run(weights=src, imgsz=imgsz, device=device, **opts).values()))
            rows.append(Row(fmt, path, export.size_mb(path)))
        except UserError as e:
            rows.append(Row(fmt, note=first_line(e, 100)))
    return rows


def validate(rows: list[Row], data: dict, imgsz: int, batch_size: int, device: str, workdir: Path) -> None:
    """mAP50-95 of every exported format on the same square batches (fixed-shape exports need them)."""
    for r in (r for r in rows if r.path is not None):
        loader = create_dataloader(data["val"], imgsz, batch_size, 32, pad=0.5, rect=False, workers=0)[0]
        try:
            res = val.run(
                data=data,
                weights=r.path,
                imgsz=imgsz,
                batch_size=batch_size,
                device=device,
                workers=0,
                dataloader=loader,
                plots=False,
                project=workdir / "val",
                name=r.fmt,
            )[0]
            r.map5095 = float(res[3])
        except UserError as e:  # e.g. onnxruntime / openvino not installed
            r.path, r.note = None, first_line(e, 100)


def sample_input(data: dict, imgsz: int, dev: torch.device) -> torch.Tensor:
    """The first val image, letterboxed to imgsz x imgsz like val's square batches: (1, 3, imgsz, imgsz) 0-1."""
    ds = create_dataloader(data["val"], imgsz, 1, 32, pad=0.5, rect=False, workers=0)[1]
    return (ds[0][0][None].float() / 255).to(dev)


def time_formats(rows: list[Row], x: torch.Tensor, dev: torch.device, runs: int, iters: int, threads: int) -> None:
    """Median over rounds of the mean forward time per format, formats rotated each round."""
    live = [r for r in rows if r.path is not None]
    backends = {r.fmt: DetectBackend(r.path, device=dev, threads=threads or None) for r in live}
    per_round: dict[str, list[float]] = {r.fmt: [] for r in live}
    with torch.inference_mode():
        for be in backends.values():
            be(x)  # warmup: lazy initialisation, thread pools, first-call allocations
        for k in range(runs):
            order = live[k % len(live) :] + live[: k % len(live)]
            for r in order:
                backends[r.fmt](x)  # untimed: the previous runtime's threads may still be spinning on the cores
                with Profile(dev) as timer:
                    for _ in range(iters):
                        backends[r.fmt](x)
                per_round[r.fmt].append(timer.dt / iters * 1e3)
    for r in live:
        r.ms = statistics.median(per_round[r.fmt])


def table(rows: list[Row]) -> str:
    """The results as a markdown table; speed relative to the PyTorch row."""
    base = next((r.ms for r in rows if r.fmt == "pt" and r.ms), None)
    lines = ["| format | file | size (MB) | mAP50-95 | ms/image | speed vs PyTorch |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.path is None:
            lines.append(f"| {LABELS[r.fmt]} | — | — | — | — | not run: {r.note} |")
            continue
        speed = f"{base / r.ms:.2f}x" if base and r.ms else "—"
        lines.append(
            f"| {LABELS[r.fmt]} | `{r.path.name}` | {r.size_mb:.1f} | {r.map5095:.4f} | {r.ms:.1f} | {speed} |"
        )
    return "\n".join(lines)


def environment(dev: torch.device, threads: int) -> str:
    """Versions, threads and load: the context the timings were measured in."""
    parts = [
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"device {dev}",
        f"onnxruntime / OpenVINO threads {threads or 'default'}",
    ]
    for name in ("onnxruntime", "openvino", "nncf"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    if hasattr(os, "getloadavg"):
        parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    return ", ".join(parts)


def run(
    weights: str | None = None,
    data: str = str(ROOT / "data" / "shapes.yaml"),
    imgsz: int = 320,
    formats: tuple[str, ...] | list[str] = FORMATS,
    batch_size: int = 32,
    runs: int = 5,
    iters: int = 10,
    device: str = "cpu",
    threads: int = 0,
) -> list[Row]:
    """Export, validate and time every format; prints and returns the rows. The CLI's defaults are these."""
    spec = check_opts(weights, formats, imgsz, batch_size, runs, iters, device)
    A.check_int("threads", threads, lo=0, todo="0 keeps each runtime's default, e.g. --threads 1")
    if threads:
        torch.set_num_threads(threads)  # process-wide; DetectBackend passes the same count to onnxruntime / OpenVINO
    stride = int(max(float(s) for s in load_checkpoint_model(weights).stride))
    A.check_stride_multiple(imgsz, stride)  # export keeps imgsz
    dev, data_dict = select_device(spec), check_dataset(data)
    with tempfile.TemporaryDirectory(prefix="formats_") as tmp:
        rows = export_all(Path(weights), list(dict.fromkeys(formats)), imgsz, Path(tmp), spec, data)
        validate(rows, data_dict, imgsz, batch_size, spec, Path(tmp))
        time_formats(rows, sample_input(data_dict, imgsz, dev), dev, runs, iters, threads)
        own = val.run(
            data=data_dict,
            weights=weights,
            imgsz=imgsz,
            batch_size=batch_size,
            device=spec,
            workers=0,
            plots=False,
            project=Path(tmp) / "val",
            name="rect",
        )[0][3]
    LOGGER.info(
        f"\n{environment(dev, threads)}; input 1x3x{imgsz}x{imgsz}, {runs} rounds x {iters} calls\n"
        f"{table(rows)}\nval.py's own rect batches for {Path(weights).name}: mAP50-95 {own:.4f}"
    )
    return rows


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )  # every default is run()'s
    p.add_argument("--weights", type=str, help="trained checkpoint .pt (python train.py writes one)")
    p.add_argument("--data", type=str, help="dataset yaml whose val split is scored")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="export, validation and timing size (pixels)")
    p.add_argument("--formats", nargs="+", help=" ".join(FORMATS))
    p.add_argument("--batch-size", type=int, help="validation batch size")
    p.add_argument("--runs", type=int, help="timing rounds (median over them, >= 3)")
    p.add_argument("--iters", type=int, help="forward calls per format per round")
    p.add_argument("--device", help="cpu or a cuda device, i.e. 0 (OpenVINO always runs on the CPU)")
    p.add_argument("--threads", type=int, help="CPU threads for every runtime (0: each one's default)")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
