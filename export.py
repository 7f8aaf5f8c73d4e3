"""Export a trained checkpoint to TorchScript, ONNX and/or OpenVINO for deployment outside this code base, or re-save
it as our plain-data checkpoint.

Usage:
    python export.py --weights runs/train/exp/weights/best.pt --include torchscript onnx
    python export.py --weights best.pt --include onnx --dynamic --opset 17
    python export.py --weights best.pt --include openvino          # best_openvino_model/ (best.xml, best.bin)
    python export.py --weights best.pt --include openvino --int8 --data shapes.yaml  # best_int8_openvino_model/
    python export.py --weights yolov5s.pt --include pt             # yolov5s_converted.pt, our checkpoint layout

The exported files output the decoded prediction (B, N, 5+nc) and carry stride and class names as metadata, so
detect.py / val.py / utils.inference.backend.DetectBackend run them like the .pt file.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.checkpoint import load_checkpoint_model, model_record, new_checkpoint, save_checkpoint, trained_imgsz
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import UserError, cli_main, first_line
from utils.core.files import atomic_target, user_writes, yaml_save
from utils.core.log import LOGGER, colorstr
from utils.core.names import names_dict
from utils.inference.backend import (
    METADATA_FILE,
    OPENVINO_DIR_SUFFIX,
    OPENVINO_RT_INFO,
    export_metadata,
    import_openvino,
    round_imgsz,
)
from utils.inference.quantize import INT8_IMAGES, Calibration, Int8Config, check_int8, quantize_openvino

FORMATS = ("torchscript", "onnx", "openvino", "pt")
TRACED = ("torchscript", "onnx", "openvino")  # formats built from a traced graph at a given input shape
CUDA_HALF = ("torchscript", "onnx")  # --half traces the model in fp16, which needs CUDA; OpenVINO / pt only store fp16
DEFAULT_OPSET = 17
DETECT_IMGSZ = (640, 640)  # --imgsz default of a detector
CLASSIFY_IMGSZ = 224  # and of a classifier that records no training size (a classifier exports at its own)
CONVERTED_SUFFIX = "_converted.pt"  # --include pt: <stem>_converted.pt next to the weights
INT8_TAG = "_int8"  # --int8: <stem>_int8_openvino_model/ (YOLOv5's folder name), so the fp32 export stays beside it


@dataclass
class Int8Export:
    """--int8: where the calibration images come from and how many, and NNCF's settings."""

    train: Any  # the dataset yaml's train split (a path or a list of them)
    images: int = INT8_IMAGES
    config: Int8Config = Int8Config()


@dataclass
class Traced:
    """The model ready for tracing: the prediction-only wrapper, the example input and the metadata it carries."""

    module: nn.Module
    im: torch.Tensor
    stride: int
    names: dict[int, str]
    task: str = "detect"  # "classify": the graph returns logits (B, nc)

    @property
    def metadata(self) -> dict[str, str]:
        return export_metadata(self.stride, self.names, self.task, int(self.im.shape[-1]))


class PredOnly(nn.Module):
    """Wrap a Model so the exported graph returns only the decoded prediction, not the raw per-level maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y


@contextmanager
def _atomic_file(f: Path) -> Iterator[Path]:
    """A temp path beside f (same suffix: the writers pick the format by it), moved onto f only when the block
    finishes: a crash or full disk keeps the old file."""
    with user_writes(f), atomic_target(f, keep_suffix=True) as tmp:
        yield tmp


@contextmanager
def _atomic_folder(folder: Path) -> Iterator[Path]:
    """A temp folder beside folder, swapped in when the block finishes (the .xml and .bin must change together;
    a crash between atomic_target's two renames leaves the old export in .old)."""
    with user_writes(folder), atomic_target(folder, folder=True) as tmp:
        yield tmp


def _trace(model: nn.Module, im: torch.Tensor) -> torch.jit.ScriptModule:
    """torch.jit.trace without its check pass (a second and third forward: seconds on a CPU, and the graph is ours)."""
    with warnings.catch_warnings():  # torch.jit is deprecated upstream but remains the portable C++/Python format
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.trace(model, im, strict=False, check_trace=False)


def export_torchscript(model: nn.Module, im: torch.Tensor, file: Path, metadata: dict[str, str]) -> Path:
    """Trace model on im and save it with the metadata as an extra file inside the archive."""
    f = file.with_suffix(".torchscript")
    LOGGER.info(f"{colorstr('TorchScript:')} exporting with torch {torch.__version__}...")
    ts = _trace(model, im)
    with _atomic_file(f) as tmp:
        ts.save(str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return f


def export_onnx(
    model: nn.Module,
    im: torch.Tensor,
    file: Path,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    simplify: bool = False,
) -> Path:
    """Export with the TorchScript-based ONNX exporter, check the graph, and store metadata_props."""
    try:
        import onnx  # optional dependency: only needed for this format
    except ImportError:
        raise UserError("--include onnx needs the onnx package — pip install onnx") from None
    f = file.with_suffix(".onnx")
    LOGGER.info(f"{colorstr('ONNX:')} exporting with onnx {onnx.__version__} opset {opset}...")
    out_axes = {0: "batch", 1: "anchors"} if metadata.get("task", "detect") == "detect" else {0: "batch"}
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": out_axes} if dynamic else None
    with _atomic_file(f) as tmp:
        _torch_onnx_export(model, im, tmp, opset, axes)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        if simplify:
            proto = _simplify_onnx(proto)
        for k, v in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
    return f


def _torch_onnx_export(model: nn.Module, im: torch.Tensor, f: Path, opset: int, axes: dict | None) -> None:
    """torch.onnx.export; an opset the exporter cannot write this model at is a UserError (the default must work)."""
    # dynamo=False: the TorchScript exporter needs no onnxscript and handles our plain conv graph well.
    try:
        torch.onnx.export(
            model,
            (im,),
            str(f),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes=axes,
        )
    except torch.onnx.OnnxExporterError as e:
        if opset == DEFAULT_OPSET:
            raise  # the default opset must work: that is a bug, not a flag to change
        first = first_line(e, limit=200).split(". ")[0]  # e.g. "Unsupported: ONNX export of ..."
        raise UserError(
            f"--opset {opset}: the ONNX exporter cannot write this model at that opset ({first}) — "
            f"use a newer one, e.g. --opset {DEFAULT_OPSET}"
        ) from None


def export_openvino(
    traced: Traced, file: Path, half: bool = False, dynamic: bool = False, int8: Int8Export | None = None
) -> Path:
    """<stem>_openvino_model/ with <stem>.xml + .bin (fp32 weights unless half) and <stem>.yaml (stride, names): the
    metadata file YOLOv5's DetectMultiBackend reads beside the .xml. With int8: <stem>_int8_openvino_model/, the
    model quantized by NNCF (utils/inference/quantize.py), its yaml also saying int8 and how it was calibrated."""
    ov = import_openvino("--include openvino")
    folder = file.parent / f"{file.stem}{INT8_TAG if int8 else ''}{OPENVINO_DIR_SUFFIX}"
    LOGGER.info(f"{colorstr('OpenVINO:')} exporting with openvino {ov.__version__}...")
    # Converted from the fp32 PyTorch graph on the CPU rather than from the .onnx file: the two IRs give the same
    # outputs (the same max |diff| to PyTorch, measured), and this way needs neither the onnx package nor an
    # intermediate file. We trace it ourselves: convert_model's own trace also runs the check pass (~4 s more).
    # --half only stores the weights in fp16 (compress_to_fp16); the CPU plugin still computes in f32.
    module = traced.module if traced.im.device.type == "cpu" else copy.deepcopy(traced.module).cpu()
    im = traced.im.float().cpu()
    shape = ov.PartialShape([-1, 3, -1, -1] if dynamic else list(im.shape))
    ov_model = ov.convert_model(_trace(module.float(), im), example_input=im, input=[shape])
    ov_model.inputs[0].get_tensor().set_names({"images"})  # the ONNX file's names, for other tools
    ov_model.outputs[0].get_tensor().set_names({"output0"})
    extra: dict[str, Any] = {}
    if int8:
        ov_model, extra = _quantize(ov_model, traced, int8)
    for k, v in {**traced.metadata, **extra}.items():  # also inside the .xml: a lone .xml still knows its metadata
        ov_model.set_rt_info(str(v), [OPENVINO_RT_INFO, k])
    with _atomic_folder(folder) as tmp:
        ov.save_model(ov_model, str(tmp / f"{file.stem}.xml"), compress_to_fp16=half)  # its default is fp16
        task = {} if traced.task == "detect" else {"task": traced.task, "imgsz": int(traced.im.shape[-1])}
        yaml_save(tmp / f"{file.stem}.yaml", {"stride": traced.stride, "names": traced.names, **task, **extra})
    return folder


def _quantize(ov_model: Any, traced: Traced, int8: Int8Export) -> tuple[Any, dict[str, Any]]:
    """(the INT8 model, the metadata its yaml records): ov_model quantized on calibration images letterboxed to the
    traced input shape, in batches of the traced batch size (a fixed-shape model takes only those)."""
    h, w = (int(s) for s in traced.im.shape[2:])
    calib = Calibration.from_split(int8.train, (h, w), int(traced.im.shape[0]), int8.images)
    LOGGER.info(f"{colorstr('OpenVINO:')} INT8 quantization with NNCF on {calib.images} training images...")
    return quantize_openvino(ov_model, calib, int8.config), int8.config.metadata(calib.images)


def export_pt(model: nn.Module, file: Path, half: bool = False) -> Path:
    """<stem>_converted.pt: the loaded (unfused) model as our plain-data checkpoint, finished (epoch -1). Loading
    goes through models.checkpoint.load_checkpoint_model, so this also converts what it accepts (e.g. YOLOv5
    checkpoints)."""
    f = file.with_name(f"{file.stem}{CONVERTED_SUFFIX}")
    LOGGER.info(f"{colorstr('PyTorch:')} saving our checkpoint layout (torch.load(weights_only=True) loads it)...")
    ckpt = new_checkpoint(
        epoch=-1,
        best_fitness=0.0,
        model=model,
        ema=None,
        updates=0,
        optimizer=None,
        scaler=None,
        opt={},
        hyp=dict(getattr(model, "hyp", None) or {}),
    )
    if half:
        ckpt["model"] = model_record(model, half=True)  # fp16 weights, like strip_optimizer's best.pt
    return save_checkpoint(ckpt, f)


def _simplify_onnx(proto):  # type: ignore[no-untyped-def]
    """Run onnx-simplifier when it is installed; otherwise warn and keep the graph as exported."""
    try:
        import onnxsim  # optional: only --simplify needs onnx-simplifier
    except ImportError:
        LOGGER.warning("WARNING: --simplify needs onnxsim (pip install onnxsim); exported without simplifying")
        return proto
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        LOGGER.warning("WARNING: onnxsim could not validate the simplified graph; keeping the original")
        return proto
    return simplified


def _check_include(include: list[str] | tuple[str, ...] | str) -> list[str]:
    """Normalise --include (case, commas) and reject unknown formats."""
    items = [include] if isinstance(include, str) else list(include)
    fmts = [x.strip().lower() for item in items for x in str(item).split(",") if x.strip()]
    bad = [x for x in fmts if x not in FORMATS]
    if bad or not fmts:
        raise UserError(
            f"--include {' '.join(items)}: unknown format {bad[0] if bad else '(none)'} — "
            f"choose from {', '.join(FORMATS)}"
        )
    return fmts


def onnx_opset_range() -> tuple[int, int]:
    """(lowest, highest) opset the installed torch's TorchScript-based ONNX exporter (dynamo=False) can write."""
    try:
        from torch.onnx import _constants as c  # optional: private, but the only place torch states its range

        hi = getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or c.ONNX_MAX_OPSET
        return int(c.ONNX_MIN_OPSET), int(hi)
    except (ImportError, AttributeError):  # older/newer torch without the table: let the exporter judge
        return 1, 10**6


def check_opts(
    include: list[str] | tuple[str, ...] | str,
    imgsz: int | list[int] | tuple[int, ...],
    batch_size: int,
    device: str,
    opset: int,
    half: bool,
    dynamic: bool,
) -> tuple[list[str], str]:
    """Every flag, checked before the checkpoint is loaded; returns (formats, device spec)."""
    fmts = _check_include(include)
    A.check_imgsz(imgsz, counts=(1, 2), multiple=None)  # rounded up to the model's stride once it is loaded
    A.check_int("batch_size", batch_size, lo=1, todo="e.g. --batch-size 1 (or --dynamic for any batch)")
    if "onnx" in fmts:
        lo, hi = onnx_opset_range()
        A.check_int("opset", opset, lo=lo, hi=hi, todo=f"torch {torch.__version__} exports ONNX opsets {lo}..{hi}")
    spec = check_device(device)
    cuda_half = [f for f in fmts if f in CUDA_HALF]
    if half and cuda_half and (spec == "cpu" or (spec == "" and not torch.cuda.is_available())):
        raise UserError(
            f"--half export of {' / '.join(cuda_half)} needs a CUDA device — add --device 0, or drop "
            f"--half (OpenVINO and pt store fp16 weights without one)"
        )
    if half and dynamic and "onnx" in fmts:
        raise UserError("--half and --dynamic cannot be combined for ONNX — drop one of them")
    if "openvino" in fmts:
        import_openvino("--include openvino")  # a missing package fails here, before the checkpoint is loaded
    return fmts, spec


def _prepare(model: nn.Module, dynamic: bool) -> None:
    """Put the model in export mode: eval, no grads, and Detect rebuilding its grids from the input shape."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if hasattr(m, "dynamic"):  # Detect: recompute grids from input shape inside the traced graph
            m.dynamic = dynamic


def _traced(
    model: nn.Module, imgsz: tuple[int, ...] | list[int] | int, batch_size: int, dev: torch.device, dynamic: bool
) -> Traced:
    """Fuse the model, put it in export mode and dry-run it once (builds lazy state, logs the output shape)."""
    model = model.fuse() if hasattr(model, "fuse") else model
    stride = int(max(float(s) for s in model.stride))
    names = names_dict(getattr(model, "names", None)) or {i: str(i) for i in range(model.nc)}
    _prepare(model, dynamic)
    im = torch.zeros(batch_size, 3, *round_imgsz(imgsz, stride), device=dev)
    traced = Traced(PredOnly(model).eval(), im, stride, names, getattr(model, "task", "detect"))
    with torch.no_grad():
        shape = tuple(traced.module(traced.im).shape)
    LOGGER.info(f"{colorstr('PyTorch:')} tracing at input {tuple(traced.im.shape)}, output shape {shape}")
    return traced


def _export_traced(
    traced: Traced,
    weights: Path,
    fmts: list[str],
    half: bool,
    dynamic: bool,
    opset: int,
    simplify: bool,
    int8: Int8Export | None = None,
) -> dict[str, Path]:
    """The traced formats asked for; OpenVINO first, from the fp32 model (its --half only compresses weights)."""
    out: dict[str, Path] = {}
    if "openvino" in fmts:
        out["openvino"] = export_openvino(traced, weights, half=half, dynamic=dynamic, int8=int8)
    if half and any(f in CUDA_HALF for f in fmts):
        traced = Traced(traced.module.half(), traced.im.half(), traced.stride, traced.names, traced.task)
    if "torchscript" in fmts:
        out["torchscript"] = export_torchscript(traced.module, traced.im, weights, traced.metadata)
    if "onnx" in fmts:
        out["onnx"] = export_onnx(
            traced.module, traced.im, weights, traced.metadata, opset=opset, dynamic=dynamic, simplify=simplify
        )
    return out


def size_mb(path: Path) -> float:
    """Size of a file, or of all files in a folder (an OpenVINO export), in MB."""
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def run(
    weights: str | Path = "yolo.pt",
    imgsz: tuple[int, ...] | list[int] | int | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    include: tuple[str, ...] | list[str] = ("torchscript", "onnx"),
    half: bool = False,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    simplify: bool = False,
    int8: bool = False,
    data: str | Path | None = None,
    int8_images: int = INT8_IMAGES,
) -> dict[str, Path]:
    """Export weights to each format in include; returns {format: path} (a folder for openvino). The CLI's defaults
    are these. int8: quantize the OpenVINO model with NNCF on int8_images images of data's train split."""
    t0 = time.time()
    fmts, spec = check_opts(include, imgsz or DETECT_IMGSZ, batch_size, device, opset, half, dynamic)
    quant = Int8Export(check_int8(fmts, data, int8_images), int8_images) if int8 else None
    if data and not int8:
        LOGGER.warning(f"WARNING: --data {data} is used only by --int8 (calibration images): ignored")
    dev = select_device(spec)
    weights = Path(weights)
    model = load_checkpoint_model(weights, device=dev)  # unfused: --include pt stores the layers the yaml builds
    LOGGER.info(f"{colorstr('PyTorch:')} starting from {weights} ({size_mb(weights):.1f} MB)")
    out = {"pt": export_pt(model, weights, half=half)} if "pt" in fmts else {}
    hint = ""  # how to run the first file written
    classifier = getattr(model, "task", "detect") == "classify"
    if quant and classifier:
        raise UserError(f"--int8 quantizes detection models; {weights} is a classifier — export it without --int8")
    if any(f in TRACED for f in fmts):
        imgsz = imgsz or ((trained_imgsz(weights) or CLASSIFY_IMGSZ) if classifier else DETECT_IMGSZ)
        if classifier and len({*([imgsz] if isinstance(imgsz, int) else imgsz)}) != 1:
            raise UserError(f"--imgsz {imgsz}: a classifier takes square centre crops — give one size, e.g. 224")
        traced = _traced(model, imgsz, batch_size, dev, dynamic)
        out.update(_export_traced(traced, weights, fmts, half, dynamic, opset, simplify, quant))
        size = traced.im.shape[2:]
        hint = "" if fmts[0] == "pt" else (f" --imgsz {size[0]}" if classifier else " --imgsz {} {}".format(*size))
    out = {f: out[f] for f in fmts}  # in the order asked for
    for fmt, f in out.items():
        LOGGER.info(f"{fmt}: saved as {f} ({size_mb(f):.1f} MB)")
    LOGGER.info(
        f"\nExport complete ({time.time() - t0:.1f}s). Run with: python "
        f"{'classify/predict.py' if classifier else 'detect.py'} --weights "
        f"{next(iter(out.values()))}{hint}"
    )
    return out


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = A.ArgParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, defaults=A.signature_defaults(run)
    )  # every default is run()'s
    parser.add_argument("--weights", type=str, required=True, help="checkpoint .pt to export (or convert)")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, help="h w (default 640; classifier 224)")
    parser.add_argument("--batch-size", type=int, help="batch size baked into a non-dynamic export")
    parser.add_argument("--device", help="cpu or cuda device, i.e. 0")
    parser.add_argument("--include", nargs="+", help=", ".join(FORMATS))
    parser.add_argument(
        "--half", action="store_true", help="FP16 export (torchscript / onnx: CUDA only; openvino / pt: fp16 weights)"
    )
    parser.add_argument("--dynamic", action="store_true", help="ONNX / OpenVINO: dynamic batch and image size")
    parser.add_argument("--opset", type=int, help="ONNX opset version")
    parser.add_argument("--simplify", action="store_true", help="ONNX: simplify with onnxsim if installed")
    parser.add_argument("--int8", action="store_true", help="OpenVINO: INT8 post-training quantization (NNCF)")
    parser.add_argument("--data", type=str, help="--int8: dataset yaml whose train images calibrate the quantization")
    parser.add_argument("--int8-images", type=int, help="--int8: number of calibration images")
    return parser.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
