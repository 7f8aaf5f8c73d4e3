"""Export a trained checkpoint to TorchScript and/or ONNX for deployment outside this code base.

Usage:
    python export.py --weights runs/train/exp/weights/best.pt --include torchscript onnx
    python export.py --weights best.pt --include onnx --dynamic --opset 17

Both files output the decoded prediction (B, N, 5+nc) and carry stride and class names as metadata, so
detect.py / val.py / utils.backend.DetectBackend run them like the .pt file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

FILE = Path(__file__).resolve()
if str(FILE.parent) not in sys.path:
    sys.path.insert(0, str(FILE.parent))  # run from any cwd

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from utils import args as A  # noqa: E402
from utils.backend import METADATA_FILE, check_imgsz, export_metadata  # noqa: E402
from utils.checkpoint import load_model  # noqa: E402
from utils.device import check_device, select_device  # noqa: E402
from utils.errors import UserError, cli_main, first_line  # noqa: E402
from utils.files import file_size_mb  # noqa: E402
from utils.log import LOGGER, colorstr  # noqa: E402
from utils.names import names_dict  # noqa: E402

FORMATS = ("torchscript", "onnx")
DEFAULT_OPSET = 17


class PredOnly(nn.Module):
    """Wrap a Model so the exported graph returns only the decoded prediction, not the raw per-level maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y


def export_torchscript(model: nn.Module, im: torch.Tensor, file: Path, metadata: dict[str, str]) -> Path:
    """Trace model on im and save it with the metadata as an extra file inside the archive."""
    f = file.with_suffix(".torchscript")
    LOGGER.info(f"{colorstr('TorchScript:')} exporting with torch {torch.__version__}...")
    with warnings.catch_warnings():  # torch.jit is deprecated upstream but remains the portable C++/Python format
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)
    ts.save(str(f), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return f


def export_onnx(model: nn.Module, im: torch.Tensor, file: Path, metadata: dict[str, str], opset: int = DEFAULT_OPSET,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """Export with the TorchScript-based ONNX exporter, check the graph, and store metadata_props."""
    try:
        import onnx  # optional dependency: only needed for this format
    except ImportError:
        raise UserError("--include onnx needs the onnx package — pip install onnx") from None
    f = file.with_suffix(".onnx")
    LOGGER.info(f"{colorstr('ONNX:')} exporting with onnx {onnx.__version__} opset {opset}...")
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}} if dynamic else None
    # dynamo=False: the TorchScript exporter needs no onnxscript and handles our plain conv graph well.
    try:
        torch.onnx.export(model, (im,), str(f), dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=["images"], output_names=["output0"], dynamic_axes=axes)
    except torch.onnx.OnnxExporterError as e:
        if opset == DEFAULT_OPSET:
            raise  # the default opset must work: that is a bug, not a flag to change
        first = first_line(e, limit=200).split(". ")[0]  # e.g. "Unsupported: ONNX export of ..."
        raise UserError(f"--opset {opset}: the ONNX exporter cannot write this model at that opset ({first}) — "
                        f"use a newer one, e.g. --opset {DEFAULT_OPSET}") from None
    proto = onnx.load(str(f))
    onnx.checker.check_model(proto)
    if simplify:
        proto = _simplify_onnx(proto)
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(f))
    return f


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
        raise UserError(f"--include {' '.join(items)}: unknown format {bad[0] if bad else '(none)'} — "
                        f"choose from {', '.join(FORMATS)}")
    return fmts


def onnx_opset_range() -> tuple[int, int]:
    """(lowest, highest) opset the installed torch's TorchScript-based ONNX exporter (dynamo=False) can write."""
    try:
        from torch.onnx import _constants as c  # optional: private, but the only place torch states its range
        hi = getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or c.ONNX_MAX_OPSET
        return int(c.ONNX_MIN_OPSET), int(hi)
    except (ImportError, AttributeError):  # older/newer torch without the table: let the exporter judge
        return 1, 10**6


def check_opts(include: list[str] | tuple[str, ...] | str, imgsz: int | list[int] | tuple[int, ...], batch_size: int,
               device: str, opset: int, half: bool, dynamic: bool) -> tuple[list[str], str]:
    """Every flag, checked before the checkpoint is loaded; returns (formats, device spec)."""
    fmts = _check_include(include)
    A.check_imgsz(imgsz, counts=(1, 2), multiple=None)  # rounded up to the model's stride once it is loaded
    A.check_int("batch_size", batch_size, lo=1, todo="e.g. --batch-size 1 (or --dynamic for any batch)")
    if "onnx" in fmts:
        lo, hi = onnx_opset_range()
        A.check_int("opset", opset, lo=lo, hi=hi, todo=f"torch {torch.__version__} exports ONNX opsets {lo}..{hi}")
    spec = check_device(device)
    if half and (spec == "cpu" or (spec == "" and not torch.cuda.is_available())):
        raise UserError("--half export needs a CUDA device — add --device 0, or drop --half")
    if half and dynamic and "onnx" in fmts:
        raise UserError("--half and --dynamic cannot be combined for ONNX — drop one of them")
    return fmts, spec


def _prepare(model: nn.Module, dynamic: bool) -> None:
    """Put the model in export mode: eval, no grads, and Detect rebuilding its grids from the input shape."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if hasattr(m, "dynamic"):  # Detect: recompute grids from input shape inside the traced graph
            m.dynamic = dynamic


def run(weights: str | Path = "yolo.pt", imgsz: tuple[int, ...] | list[int] | int = (640, 640), batch_size: int = 1,
        device: str = "cpu", include: tuple[str, ...] | list[str] = ("torchscript", "onnx"), half: bool = False,
        dynamic: bool = False, opset: int = DEFAULT_OPSET, simplify: bool = False) -> dict[str, Path]:
    """Export weights to each format in include; returns {format: path}. The CLI's defaults are these."""
    t0 = time.time()
    fmts, spec = check_opts(include, imgsz, batch_size, device, opset, half, dynamic)
    dev = select_device(spec)
    weights = Path(weights)
    model = load_model(weights, device=dev, fuse=True)
    stride = int(max(float(s) for s in model.stride))
    size = check_imgsz(imgsz, stride)
    names = names_dict(getattr(model, "names", None)) or {i: str(i) for i in range(model.nc)}
    metadata = export_metadata(stride, names)
    _prepare(model, dynamic)
    im = torch.zeros(batch_size, 3, *size, device=dev)
    if half:
        model, im = model.half(), im.half()
    wrapped = PredOnly(model).eval()
    with torch.no_grad():
        shape = tuple(wrapped(im).shape)  # dry run: builds lazy state (grids) and reports the output shape
    LOGGER.info(f"{colorstr('PyTorch:')} starting from {weights} with output shape {shape} "
                f"({file_size_mb(weights):.1f} MB)")
    out: dict[str, Path] = {}
    if "torchscript" in fmts:
        out["torchscript"] = export_torchscript(wrapped, im, weights, metadata)
    if "onnx" in fmts:
        out["onnx"] = export_onnx(wrapped, im, weights, metadata, opset=opset, dynamic=dynamic, simplify=simplify)
    for fmt, f in out.items():
        LOGGER.info(f"{fmt}: saved as {f} ({file_size_mb(f):.1f} MB)")
    LOGGER.info(f"\nExport complete ({time.time() - t0:.1f}s). Run with: python detect.py --weights "
                f"{next(iter(out.values()))} --imgsz {size[0]} {size[1]}")
    return out


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = A.ArgParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                         defaults=A.signature_defaults(run))  # every default is run()'s
    parser.add_argument("--weights", type=str, required=True, help="checkpoint .pt to export")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, help="h w")
    parser.add_argument("--batch-size", type=int, help="batch size baked into a non-dynamic export")
    parser.add_argument("--device", help="cpu or cuda device, i.e. 0")
    parser.add_argument("--include", nargs="+", help="torchscript, onnx")
    parser.add_argument("--half", action="store_true", help="FP16 export (CUDA only)")
    parser.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch and image size")
    parser.add_argument("--opset", type=int, help="ONNX opset version")
    parser.add_argument("--simplify", action="store_true", help="ONNX: simplify with onnxsim if installed")
    return parser.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
