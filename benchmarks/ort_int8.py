"""Benchmark: is ONNX Runtime's static INT8 quantization worth adding to export.py? mAP50-95 and images/s of one
checkpoint's ONNX export quantized by onnxruntime.quantization.quantize_static, against fp32 ONNX and against
OpenVINO fp32 / INT8 (export.py --int8), at each size.

    python benchmarks/ort_int8.py --weights runs/train/quick/weights/best.pt --data data/shapes.yaml --sizes 320 640

For each --sizes S a copy of --weights is exported (batch 1, S x S) to ONNX, OpenVINO and INT8 OpenVINO by
export.run. The ONNX file goes through ONNX Runtime's quant_pre_process (shape inference and graph optimisation, as
its docs advise before quantizing) and then quantize_static, calibrated on the same --int8-images training images
export.py --int8 uses (utils.inference.quantize.Calibration). The variants in --variants:
- qdq: QuantizeLinear / DequantizeLinear pairs around every quantizable op, weights int8 per output channel,
  activations uint8 (ORT's default for QDQ on x86), MinMax calibration; the Detect layer (its output convolutions
  and the box decode, found by walking back from the outputs) stays float, as export.py --int8 keeps it;
- qdq_head: the same with the Detect layer quantized too;
- qoperator: ORT's older QOperator format (QLinearConv, MatMulInteger, ...), Detect layer float.
Every model is scored by val.run (DetectBackend runs the quantized .onnx like any export: the fp32 file's metadata
is copied over) and timed in rotated rounds on the first val image, ONNX Runtime sessions and OpenVINO compiled
models with --threads threads each (OpenVINO in f32, as DetectBackend compiles). Prints the CPU and one table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime import quantization as q
from onnxruntime.quantization.shape_inference import quant_pre_process

import export
from benchmarks.common import check_trained_weights, cpu_name, rotated_ms
from benchmarks.int8 import val_batch, validate
from utils.core import args as A
from utils.core.errors import cli_main
from utils.core.log import LOGGER
from utils.dataloaders.data_yaml import check_dataset
from utils.inference.backend import import_openvino, resolve_weights
from utils.inference.quantize import INT8_IMAGES, Calibration, check_int8

# variant -> (QuantFormat name, Detect layer kept float)
VARIANTS: dict[str, tuple[str, bool]] = {
    "qdq": ("QDQ", True),
    "qdq_head": ("QDQ", False),
    "qoperator": ("QOperator", True),
}


@dataclass
class Row:
    """One model at one size."""

    size: int
    name: str  # "onnx fp32", "onnx int8 <variant>", "openvino fp32", "openvino int8"
    path: Path
    quantize_s: float = 0.0
    map5095: float = 0.0
    ms: float = 0.0


def onnx_head_nodes(model: Any) -> list[str]:
    """Names of the Detect layer's nodes in an ONNX graph: every node on a path back from the graph outputs, up to and
    including the convolutions that make the raw head maps (the walk stops at a Conv and does not follow a Shape,
    whose branch leads back into the network) — the ONNX twin of quantize.detect_head_ops."""
    producer = {out: node for node in model.graph.node for out in node.output}
    seen: dict[str, Any] = {}
    todo = [producer[o.name] for o in model.graph.output if o.name in producer]
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen[node.name] = node
        if node.op_type not in ("Conv", "Shape"):
            todo.extend(producer[i] for i in node.input if i in producer)
    return [n for n, node in seen.items() if node.op_type != "Constant"]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over Calibration: one {input: batch} per get_next()."""

    def __init__(self, calib: Calibration, input_name: str):
        self.batches = iter(calib.groups)
        self.calib, self.input_name = calib, input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        group = next(self.batches, None)
        return None if group is None else {self.input_name: self.calib.batch(group)}


def quantize_onnx(fp32: Path, variant: str, calib: Calibration) -> Row:
    """fp32's ONNX quantized statically as VARIANTS[variant] says, with fp32's metadata; the seconds it took."""
    fmt, float_head = VARIANTS[variant]
    pre = fp32.with_name(f"{fp32.stem}_pre.onnx")
    out = fp32.with_name(f"{fp32.stem}_{variant}.onnx")
    t0 = time.time()
    if not pre.exists():
        quant_pre_process(str(fp32), str(pre))
    model = onnx.load(str(pre))
    q.quantize_static(
        str(pre),
        str(out),
        _Reader(calib, model.graph.input[0].name),
        quant_format=getattr(q.QuantFormat, fmt),
        per_channel=True,
        activation_type=q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.MinMax,
        nodes_to_exclude=onnx_head_nodes(model) if float_head else [],
    )
    dt = time.time() - t0
    quantized = onnx.load(str(out))
    onnx.helper.set_model_props(quantized, {p.key: p.value for p in onnx.load(str(fp32)).metadata_props})
    onnx.save(quantized, str(out))
    return Row(calib.hw[0], f"onnx int8 {variant}", out, dt)


def ort_call(path: Path, x: np.ndarray, threads: int) -> Callable[[], Any]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def ov_call(path: Path, x: np.ndarray, threads: int) -> Callable[[], Any]:
    core = import_openvino("benchmarks/ort_int8.py").Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
    compiled = core.compile_model(core.read_model(str(resolve_weights(path))), "CPU", config)
    return lambda: compiled(x)


def measure_size(weights: Path, data: dict, size: int, opts: dict[str, Any], workdir: Path) -> list[Row]:
    """Export, quantize, score and time every model at one size."""
    src = workdir / f"s{size}" / weights.name
    src.parent.mkdir(parents=True)
    shutil.copy(weights, src)
    out = export.run(weights=src, imgsz=size, include=["onnx", "openvino"])
    t0 = time.time()
    ov8 = export.run(weights=src, imgsz=size, include=["openvino"], int8=True, data=data["yaml_file"],
                     int8_images=opts["int8_images"])["openvino"]  # fmt: skip
    rows = [Row(size, "onnx fp32", out["onnx"]), Row(size, "openvino fp32", out["openvino"])]
    rows.append(Row(size, "openvino int8", ov8, time.time() - t0))
    calib = Calibration.from_split(data["train"], (size, size), 1, opts["int8_images"])
    rows += [quantize_onnx(out["onnx"], v, calib) for v in opts["variants"]]
    for r in rows:
        validate(r, data, workdir)  # a Row has what int8.validate reads and writes: size, name, path, map5095
    x = val_batch(data, size, 1).numpy()
    threads = opts["threads"]
    calls = [(ov_call if r.name.startswith("openvino") else ort_call)(r.path, x, threads) for r in rows]
    for call in calls:
        call()  # warmup: lazy initialisation, thread pools
    for r, ms in zip(rows, rotated_ms(calls, opts["runs"], opts["iters"])):
        r.ms = ms
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| size | model | mAP50-95 | Δ vs onnx fp32 | ms/image | images/s | speed vs onnx fp32 "
        "| speed vs openvino fp32 | quantize s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = {b.name: b for b in rows if b.size == r.size}
        onnx32, ov32 = base["onnx fp32"], base["openvino fp32"]
        lines.append(
            f"| {r.size} | {r.name} | {r.map5095:.4f} | {r.map5095 - onnx32.map5095:+.4f} | {r.ms:.1f} | "
            f"{1e3 / r.ms:.1f} | {onnx32.ms / r.ms:.2f}x | {ov32.ms / r.ms:.2f}x | {r.quantize_s:.0f} |"
        )
    return "\n".join(lines)


def run(
    weights: str | None = None,
    data: str = str(ROOT / "data" / "shapes.yaml"),
    sizes: tuple[int, ...] | list[int] = (320, 640),
    variants: tuple[str, ...] | list[str] = ("qdq", "qdq_head", "qoperator"),
    runs: int = 5,
    iters: int = 10,
    threads: int = 2,
    int8_images: int = INT8_IMAGES,
) -> list[Row]:
    """Measure ONNX Runtime INT8 against fp32 ONNX and OpenVINO at every size; prints and returns the rows."""
    check_trained_weights(weights)
    for s in sizes:
        A.check_imgsz(s, counts=(1,))
    for v in variants:
        A.check_choice("variants", v, VARIANTS)
    A.check_int("runs", runs, lo=3, todo="a median needs at least 3 rounds, e.g. --runs 5")
    A.check_int("iters", iters, lo=1, todo="e.g. --iters 10")
    A.check_int("threads", threads, lo=1, todo="e.g. --threads 2")
    check_int8(["openvino"], data, int8_images)
    opts = dict(variants=list(dict.fromkeys(variants)), runs=runs, iters=iters, threads=threads)
    opts["int8_images"] = int8_images
    data_dict = check_dataset(data)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ort_int8_") as tmp:
        for size in sizes:
            rows += measure_size(Path(weights), data_dict, size, opts, Path(tmp))
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("onnxruntime", "openvino", "nncf"))
    LOGGER.info(f"\nCPU {cpu_name()} ({os.cpu_count()} logical cores), {threads} threads each, {versions}")
    LOGGER.info(table(rows))
    return rows


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )  # every default is run()'s
    p.add_argument("--weights", type=str, help="trained checkpoint .pt (python train.py --name quick writes one)")
    p.add_argument("--data", type=str, help="dataset yaml: train split calibrates, val split is scored")
    p.add_argument("--sizes", nargs="+", type=int, help="input sizes (square, pixels)")
    p.add_argument("--variants", nargs="+", help=f"ONNX Runtime quantizations: {' '.join(VARIANTS)}")
    p.add_argument("--runs", type=int, help="timing rounds (median over them, >= 3)")
    p.add_argument("--iters", type=int, help="calls per model per round")
    p.add_argument("--threads", type=int, help="threads of every ONNX Runtime session and OpenVINO model")
    p.add_argument("--int8-images", type=int, help="calibration images")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
