"""Benchmark: INT8 (export.py --int8) vs fp32 OpenVINO on one checkpoint — images/s and mAP50-95 at each size.

    python benchmarks/int8.py --weights runs/train/quick/weights/best.pt --data data/shapes.yaml
    python benchmarks/int8.py --weights best.pt --sizes 320 --settings chosen performance transformer quantized_head
    python benchmarks/int8.py --weights best.pt --precision bf16 --batch-size 8

For each --sizes S, a copy of --weights is exported to fp32 OpenVINO and, through export.py's own --int8 path, to
INT8 (`chosen`: the settings export.py uses); other --settings quantize the same fp32 IR with one NNCF option changed
(utils.inference.quantize.Int8Config). Then
1. mAP50-95 of every model with val.run on the same square S x S batches of --data's val split;
2. how far each INT8 model's outputs are from fp32 on the first 32 val images, over the boxes fp32 scores above
   0.25: box centres (px, mean and 99th percentile), box sizes (relative, 99th percentile) and scores (99th
   percentile);
3. ms per image of the compiled models (batch --batch-size, exported at that batch, the first val images as input):
   one warmup call each, then --runs rounds timing every model for --iters calls after one untimed call, the order
   rotated each round (fp32 / int8 alternate); the median of the rounds' means. All models are compiled with the
   same configuration: --precision f32 (DetectBackend's INFERENCE_PRECISION_HINT), bf16 or default (the plugin's
   choice), --hint (OpenVINO's PERFORMANCE_HINT) and --threads (INFERENCE_NUM_THREADS; 0: the plugin's default).
Prints the CPU's name, the cores and the threads OpenVINO used, and one markdown table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch

import export
import val
from benchmarks.common import check_trained_weights, cpu_name, rotated_ms
from utils.core import args as A
from utils.core.errors import cli_main
from utils.core.files import yaml_load, yaml_save
from utils.core.log import LOGGER
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import create_dataloader
from utils.inference.backend import OPENVINO_DIR_SUFFIX, DetectBackend, import_openvino, resolve_weights
from utils.inference.quantize import INT8_IMAGES, Calibration, Int8Config, check_int8, quantize_openvino

# NNCF settings, each one option away from what export.py uses ("chosen"); (config, calibration images or None for
# --int8-images)
SETTINGS: dict[str, tuple[Int8Config, int | None]] = {
    "chosen": (Int8Config(), None),
    "performance": (Int8Config(preset="performance"), None),
    "transformer": (Int8Config(transformer=True), None),
    "quantized_head": (Int8Config(float_head=False), None),
    "full_bias_correction": (Int8Config(fast_bias_correction=False), None),
    "images_100": (Int8Config(), 100),
}
PRECISIONS = {"f32": {"INFERENCE_PRECISION_HINT": "f32"}, "bf16": {"INFERENCE_PRECISION_HINT": "bf16"}, "default": {}}
HINTS = ("none", "latency", "throughput")
ERR_IMAGES = 32  # val images the output errors are measured on
ERR_CONF = 0.25  # fp32 boxes scoring above this (detect.py's default threshold) are compared


@dataclass
class Result:
    """One model at one size; err_* are None for fp32 (the reference)."""

    size: int
    name: str  # "fp32" or a SETTINGS key
    path: Path
    quantize_s: float = 0.0
    map5095: float = 0.0
    ms: float = 0.0
    err_xy_mean: float | None = None
    err_xy_p99: float | None = None
    err_wh_p99: float | None = None  # relative: |w - w_fp32| / w_fp32 (and h)
    err_score_p99: float | None = None


def check_opts(weights: str | None, data: str, sizes: list[int], settings: list[str], opts: dict[str, Any]) -> Any:
    """Every flag, checked before anything is exported; returns the train split (calibration images)."""
    check_trained_weights(weights)
    for s in sizes:
        A.check_imgsz(s, counts=(1,))
    for s in settings:
        A.check_choice("settings", s, SETTINGS)
    A.check_int("batch_size", opts["batch_size"], lo=1, hi=ERR_IMAGES, todo="the timing input is val images")
    A.check_int("runs", opts["runs"], lo=3, todo="a median needs at least 3 rounds, e.g. --runs 5")
    A.check_int("iters", opts["iters"], lo=1, todo="e.g. --iters 10")
    A.check_int("threads", opts["threads"], lo=0, todo="0 keeps OpenVINO's default, e.g. --threads 2")
    A.check_choice("precision", opts["precision"], PRECISIONS)
    A.check_choice("hint", opts["hint"], HINTS)
    return check_int8(["openvino"], data, opts["int8_images"])


def export_size(
    weights: Path, size: int, batch: int, data: str, images: int, workdir: Path
) -> tuple[Path, Path, float]:
    """(fp32 folder, int8 folder, seconds the int8 export took) for a copy of weights at size, both by export.run."""
    src = workdir / f"s{size}" / weights.name
    src.parent.mkdir(parents=True)
    shutil.copy(weights, src)
    fp32 = export.run(weights=src, imgsz=size, batch_size=batch, include=["openvino"])["openvino"]
    t0 = time.time()
    int8 = export.run(
        weights=src, imgsz=size, batch_size=batch, include=["openvino"], int8=True, data=data, int8_images=images
    )["openvino"]
    return fp32, int8, time.time() - t0


def quantize_setting(fp32: Path, name: str, train: Any, size: int, batch: int, images: int) -> Result:
    """The fp32 IR quantized with one SETTINGS entry, saved beside it with the fp32 metadata."""
    ov = import_openvino("benchmarks/int8.py")
    config, n = SETTINGS[name]
    stem = fp32.name.removesuffix(OPENVINO_DIR_SUFFIX)
    calib = Calibration.from_split(train, (size, size), batch, n or images)
    t0 = time.time()
    model = quantize_openvino(ov.Core().read_model(str(fp32 / f"{stem}.xml")), calib, config)
    dt = time.time() - t0
    out = fp32.parent / f"{stem}_{name}{OPENVINO_DIR_SUFFIX}"
    out.mkdir()
    ov.save_model(model, str(out / f"{stem}.xml"))
    yaml_save(out / f"{stem}.yaml", {**yaml_load(fp32 / f"{stem}.yaml"), **config.metadata(calib.images)})
    return Result(size, name, out, dt)


def val_batch(data: dict, size: int, n: int) -> torch.Tensor:
    """The first n val images letterboxed to size x size as val's square batches: (n, 3, size, size) 0-1."""
    ds = create_dataloader(data["val"], size, n, 32, pad=0.5, rect=False, workers=0)[1]
    return torch.stack([ds[i][0] for i in range(min(n, ds.n))]).float() / 255


def output_errors(res: Result, ref: torch.Tensor, x: torch.Tensor) -> None:
    """Box-centre and score differences from the fp32 outputs ref, over the boxes fp32 scores above ERR_CONF."""
    with torch.inference_mode():
        got = DetectBackend(res.path)(x)
    score = lambda p: p[..., 4] * p[..., 5:].max(-1).values  # noqa: E731  (YOLOv5's confidence: obj x best class)
    keep = score(ref) > ERR_CONF
    dxy = (got[..., :2] - ref[..., :2])[keep].abs().flatten()
    dwh = ((got[..., 2:4] - ref[..., 2:4]) / ref[..., 2:4])[keep].abs().flatten()
    dscore = (score(got) - score(ref))[keep].abs()
    res.err_xy_mean, res.err_xy_p99 = float(dxy.mean()), float(dxy.quantile(0.99))
    res.err_wh_p99, res.err_score_p99 = float(dwh.quantile(0.99)), float(dscore.quantile(0.99))


def validate(res: Result, data: dict, workdir: Path) -> None:
    res.map5095 = float(
        val.run(
            data=data,
            weights=res.path,
            imgsz=res.size,
            batch_size=32,
            workers=0,
            plots=False,
            project=workdir / "val",
            name=f"{res.size}_{res.name}",
        )[0][3]
    )


def compile_all(results: list[Result], config: dict[str, str]) -> list[Any]:
    """Each model compiled for the CPU with the same configuration."""
    core = import_openvino("benchmarks/int8.py").Core()
    return [core.compile_model(core.read_model(str(resolve_weights(r.path))), "CPU", config) for r in results]


def time_models(results: list[Result], x: np.ndarray, config: dict[str, str], runs: int, iters: int) -> int:
    """ms per image of each model (median over rotated rounds); returns the threads OpenVINO used."""
    models = compile_all(results, config)
    for m in models:
        m(x)  # warmup: lazy initialisation, thread pools
    for r, ms in zip(results, rotated_ms([lambda m=m: m(x) for m in models], runs, iters)):
        r.ms = ms / len(x)
    return int(models[0].get_property("INFERENCE_NUM_THREADS"))


def table(results: list[Result]) -> str:
    """Markdown: per size, fp32 first; speed and mAP relative to that size's fp32 row."""
    lines = [
        "| size | model | mAP50-95 | Δ vs fp32 | ms/image | images/s | speed vs fp32 | box centre error px "
        "(mean / p99) | box size error p99 | score error p99 | quantize s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = next(b for b in results if b.size == r.size and b.name == "fp32")
        err = "—" if r.err_xy_mean is None else f"{r.err_xy_mean:.2f} / {r.err_xy_p99:.2f}"
        score = "—" if r.err_score_p99 is None else f"{r.err_score_p99:.3f}"
        wh = "—" if r.err_wh_p99 is None else f"{100 * r.err_wh_p99:.1f} %"
        lines.append(
            f"| {r.size} | {'fp32' if r.name == 'fp32' else 'INT8 ' + r.name} | {r.map5095:.4f} | "
            f"{r.map5095 - base.map5095:+.4f} | {r.ms:.1f} | {1e3 / r.ms:.1f} | {base.ms / r.ms:.2f}x | {err} | "
            f"{wh} | {score} | {r.quantize_s:.0f} |"
        )
    return "\n".join(lines)


def environment(threads: int, precision: str, hint: str, batch: int) -> str:
    parts = [f"CPU {cpu_name()} ({os.cpu_count()} logical cores)", f"OpenVINO threads {threads}"]
    parts += [f"precision {precision}", f"performance hint {hint}", f"batch {batch}"]
    parts += [f"{n} {importlib.metadata.version(n)}" for n in ("openvino", "nncf")]
    if hasattr(os, "getloadavg"):
        parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    return ", ".join(parts)


def measure_size(
    weights: Path, data: dict, size: int, settings: list[str], opts: dict[str, Any], workdir: Path
) -> list[Result]:
    """Export, quantize, validate, compare and time every model at one size."""
    fp32, int8, dt = export_size(weights, size, opts["batch_size"], data["yaml_file"], opts["int8_images"], workdir)
    results = [Result(size, "fp32", fp32)]
    if "chosen" in settings:  # export.py's own path; shutil.rmtree of an unused INT8 export is not worth a flag
        results.append(Result(size, "chosen", int8, dt))
    for name in (s for s in settings if s != "chosen"):
        results.append(quantize_setting(fp32, name, data["train"], size, opts["batch_size"], opts["int8_images"]))
    x = val_batch(data, size, ERR_IMAGES)
    with torch.inference_mode():
        ref = DetectBackend(fp32)(x)
    for r in results:
        validate(r, data, workdir)
        if r.name != "fp32":
            output_errors(r, ref, x)
    opts["used_threads"] = time_models(
        results, x[: opts["batch_size"]].numpy(), ov_config(opts), opts["runs"], opts["iters"]
    )
    return results


def ov_config(opts: dict[str, Any]) -> dict[str, str]:
    """The compile configuration every model gets: precision, performance hint, threads."""
    config = dict(PRECISIONS[opts["precision"]])
    if opts["hint"] != "none":
        config["PERFORMANCE_HINT"] = opts["hint"].upper()
    if opts["threads"]:
        config["INFERENCE_NUM_THREADS"] = str(opts["threads"])
    return config


def run(
    weights: str | None = None,
    data: str = str(ROOT / "data" / "shapes.yaml"),
    sizes: tuple[int, ...] | list[int] = (320, 640),
    settings: tuple[str, ...] | list[str] = ("chosen",),
    batch_size: int = 1,
    runs: int = 5,
    iters: int = 10,
    threads: int = 0,
    int8_images: int = INT8_IMAGES,
    precision: str = "f32",
    hint: str = "none",
) -> list[Result]:
    """Measure fp32 vs INT8 OpenVINO at every size; prints and returns the results. The CLI's defaults are these."""
    opts = dict(batch_size=batch_size, runs=runs, iters=iters, threads=threads, int8_images=int8_images)
    opts |= dict(precision=precision, hint=hint)
    check_opts(weights, data, list(sizes), list(settings), opts)
    data_dict = check_dataset(data)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="int8_") as tmp:
        for size in sizes:
            results += measure_size(Path(weights), data_dict, size, list(dict.fromkeys(settings)), opts, Path(tmp))
    LOGGER.info(f"\n{environment(opts['used_threads'], precision, hint, batch_size)}\n{table(results)}")
    return results


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )  # every default is run()'s
    p.add_argument("--weights", type=str, help="trained checkpoint .pt (python train.py --name quick writes one)")
    p.add_argument("--data", type=str, help="dataset yaml: train split calibrates, val split is scored and timed")
    p.add_argument("--sizes", nargs="+", type=int, help="input sizes (square, pixels)")
    p.add_argument("--settings", nargs="+", help=f"NNCF settings to compare: {' '.join(SETTINGS)}")
    p.add_argument("--batch-size", type=int, help="batch of the exported models and of the timed calls")
    p.add_argument("--runs", type=int, help="timing rounds (median over them, >= 3)")
    p.add_argument("--iters", type=int, help="calls per model per round")
    p.add_argument("--threads", type=int, help="OpenVINO CPU threads (0: its default)")
    p.add_argument("--int8-images", type=int, help="calibration images")
    p.add_argument("--precision", help=f"OpenVINO inference precision of every model: {' '.join(PRECISIONS)}")
    p.add_argument("--hint", help=f"OpenVINO performance hint of every model: {' '.join(HINTS)}")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
