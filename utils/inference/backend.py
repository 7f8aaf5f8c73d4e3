"""DetectBackend: one forward for our .pt checkpoints and exported .torchscript, .onnx and OpenVINO files.

A classifier file (task "classify" in its record or export metadata) returns logits (B, nc) instead; `task` says
which, `imgsz` is the size an exported classifier was traced at (None for .pt).

Every backend takes a float (B,3,H,W) 0-1 tensor and returns the decoded prediction (B,N,5+nc) — xywh in input pixels,
sigmoid objectness and class scores — exactly what Model's eval forward puts first in its tuple. Exported files carry
stride and names as metadata (written by export.py), so a backend knows them without the source yaml. An OpenVINO model
is an .xml (+ .bin) file pair, passed as the .xml or as export.py's `<stem>_openvino_model/` folder.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn as nn

from models.checkpoint import load_checkpoint_model
from utils.core.errors import UserError, first_line
from utils.core.files import yaml_load
from utils.core.host_memory import keep_freed_memory
from utils.core.log import LOGGER
from utils.core.names import names_dict

SUFFIXES = (".pt", ".torchscript", ".onnx", ".xml")
METADATA_FILE = "config.txt"  # name of the TorchScript _extra_files entry holding the metadata json
OPENVINO_DIR_SUFFIX = "_openvino_model"  # export.py writes <stem>_openvino_model/<stem>.xml (YOLOv5's layout)
OPENVINO_METADATA = "metadata.yaml"  # stride + names beside the .xml in exports before <stem>.yaml (YOLOv5's name)
OPENVINO_RT_INFO = "model_info"  # the .xml's rt_info section holding the same metadata (a lone .xml still works)


def export_metadata(
    stride: int, names: dict[int, str], task: str = "detect", imgsz: int | None = None
) -> dict[str, str]:
    """The metadata export.py writes and DetectBackend reads back, in YOLOv5's form so that its DetectMultiBackend
    (and the deployment scripts built on it) read our files: stride as an int string, names as a Python literal with
    int keys ("{0: 'circle', 1: 'square'}"). A classifier adds task and the image size it was exported at (a
    detection file has no task: detect)."""
    meta = {"stride": str(int(stride)), "names": repr(names_dict(names))}
    if task != "detect":
        meta |= {"task": task, "imgsz": str(int(imgsz or 0))}
    return meta


def metadata_task(meta: dict[str, str]) -> tuple[str, int | None]:
    """(task, classifier imgsz) of export metadata; files without a task key are detectors."""
    task = str(meta.get("task", "detect"))
    try:
        imgsz = int(meta["imgsz"]) or None if "imgsz" in meta else None
    except (TypeError, ValueError):
        imgsz = None
    return task, imgsz


def parse_metadata(meta: dict[str, str], path: Path) -> tuple[int, dict[int, str]]:
    """(stride, names) from export metadata; a file without it was not exported by export.py. Names are read as a
    literal only (ast.literal_eval: YOLOv5's Python form, and the JSON form our older exports wrote), never run."""
    try:
        stride = int(meta["stride"])
        names = names_dict(ast.literal_eval(meta["names"]))
    except (KeyError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserError(
            f"{path} has no stride/names metadata — export it with export.py from a .pt checkpoint"
        ) from None
    return stride, names


def round_imgsz(imgsz: int | list[int] | tuple[int, ...], stride: int = 32) -> tuple[int, int]:
    """(h, w) from --imgsz (one or two ints), each rounded up to a multiple of stride with a warning."""
    size = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if len(size) not in (1, 2) or any(int(s) <= 0 for s in size):
        raise UserError(f"--imgsz {' '.join(map(str, size))}: give one or two positive sizes, e.g. --imgsz 640")
    size = size * 2 if len(size) == 1 else size
    new = tuple(int(-(-int(s) // stride) * stride) for s in size)
    if new != tuple(int(s) for s in size):
        LOGGER.warning(
            f"WARNING: --imgsz {' '.join(map(str, size))} must be a multiple of the max stride {stride}, "
            f"using {new[0]} {new[1]}"
        )
    return new


def import_openvino(what: str) -> Any:
    """The openvino module, or a one-line UserError saying what needed it and how to install it."""
    try:
        import openvino as ov  # optional dependency: only OpenVINO export and .xml inference need it
    except ImportError:
        raise UserError(
            f"{what} needs the openvino package — pip install openvino (or use the .pt / .torchscript / .onnx file)"
        ) from None
    return ov


def resolve_weights(w: Path) -> Path:
    """A folder stands for the OpenVINO model inside it: <stem>.xml of a <stem>_openvino_model/ folder, else its
    only .xml. Any other path is returned as it is."""
    if not w.is_dir():
        return w
    own = w / f"{w.name.removesuffix(OPENVINO_DIR_SUFFIX)}.xml"
    xmls = [own] if own.is_file() else sorted(w.glob("*.xml"))
    if len(xmls) != 1:
        raise UserError(
            f"--weights {w}: a folder must hold one OpenVINO .xml model, found {len(xmls)} — "
            f"pass the .xml file itself (or a *{OPENVINO_DIR_SUFFIX} folder from export.py)"
        )
    return xmls[0]


def openvino_metadata(xml: Path, model: Any) -> dict[str, str]:
    """export_metadata()-style strings from <stem>.yaml beside the .xml (YOLOv5's file, which export.py writes), an
    older export's metadata.yaml, or the .xml's rt_info."""
    for f in (xml.with_suffix(".yaml"), xml.parent / OPENVINO_METADATA):
        data = yaml_load(f) if f.is_file() else None
        if isinstance(data, dict) and "stride" in data and "names" in data:
            try:
                task, imgsz = data.get("task", "detect"), data.get("imgsz")
                return export_metadata(int(data["stride"]), names_dict(data["names"]), str(task), imgsz)
            except (TypeError, ValueError, AttributeError):
                raise UserError(
                    f"{f}: stride must be an int and names a list or mapping — fix the file or re-export with export.py"
                ) from None
    keys = ("stride", "names")
    if all(model.has_rt_info([OPENVINO_RT_INFO, k]) for k in keys):
        keys += tuple(k for k in ("task", "imgsz") if model.has_rt_info([OPENVINO_RT_INFO, k]))
        return {k: str(model.get_rt_info([OPENVINO_RT_INFO, k]).astype(str)) for k in keys}
    return {}


def _onnx_session(path: Path, device: torch.device, threads: int | None = None) -> Any:
    """An onnxruntime session on the CUDA provider when asked and available, otherwise CPU."""
    try:
        import onnxruntime as ort  # optional dependency: only needed to run .onnx files
    except ImportError:
        raise UserError(
            f"running {path} needs onnxruntime — pip install onnxruntime "
            f"(or onnxruntime-gpu), or use the .pt / .torchscript file"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for invalid files
        raise UserError(
            f"{path} is not a loadable ONNX model ({first_line(e)}) — re-export it with export.py"
        ) from None


class DetectBackend(nn.Module):
    """Load .pt / .torchscript / .onnx / OpenVINO (.xml or *_openvino_model/) weights and run them with one call."""

    def __init__(
        self,
        weights: str | Path,
        device: str | torch.device = "cpu",
        fp16: bool = False,
        fuse: bool = True,
        threads: int | None = None,
        dnn: bool = False,
    ):
        """threads: CPU threads of the onnxruntime / OpenVINO runtime (None: its default). PyTorch's thread count is
        process-wide: set it with torch.set_num_threads. dnn: run an .onnx file with OpenCV DNN instead of
        onnxruntime (YOLOv5's --dnn)."""
        super().__init__()
        self.threads, self.dnn = threads, bool(dnn)
        w = resolve_weights(Path(weights[0] if isinstance(weights, (list, tuple)) else weights))
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        if not w.is_file():  # first: a mistyped path is not a format problem
            raise UserError(
                f"weights file not found: {w} — check the path (trained weights are in runs/train/*/weights/)"
            )
        if w.suffix not in SUFFIXES:
            raise UserError(
                f"--weights {w}: unsupported format '{w.suffix}' — use one of {', '.join(SUFFIXES)} "
                f"(or a *{OPENVINO_DIR_SUFFIX} folder)"
            )
        if self.dnn and w.suffix != ".onnx":
            raise UserError(f"--dnn runs .onnx files with OpenCV DNN, not {w.suffix} — export one (export.py "
                            f"--include onnx) or drop --dnn")  # fmt: skip
        # Half precision only helps (and is only well supported) on CUDA.
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        if fp16 and not self.fp16:
            LOGGER.warning("WARNING: --half needs a CUDA device, running in float32")
        self.pt, self.jit, self.onnx = w.suffix == ".pt", w.suffix == ".torchscript", w.suffix == ".onnx"
        self.openvino = w.suffix == ".xml"
        self.int8 = False  # an OpenVINO model with quantized (FakeQuantize) ops: export.py --int8
        self.weights, self.model, self.session, self.static_shape = w, None, None, None
        if self.device.type == "cpu":  # each forward frees and re-allocates its activations: keep them mapped
            keep_freed_memory()
        if self.pt:
            self._load_pt(w, fuse)
        elif self.jit:
            self._load_torchscript(w)
        elif self.onnx and self.dnn:
            self._load_dnn(w)
        elif self.onnx:
            self._load_onnx(w)
        else:
            self._load_openvino(w)
        self.nc = len(self.names) if not self.pt else int(self.model.nc)
        # Only the PyTorch model is known to accept any stride-multiple input; exported files run at export size.
        self.any_shape = self.pt

    def _load_pt(self, w: Path, fuse: bool) -> None:
        model = load_checkpoint_model(w, device=self.device, fuse=fuse)
        model = model.half() if self.fp16 else model.float()
        # NHWC weights make every convolution run NHWC (the input is converted at the first one): yolov5s at 640 px
        # on CPU 57 vs 82 ms per image (docs/benchmarks.md); NHWC is also the layout of CUDA's tensor cores
        self.model = model.to(memory_format=torch.channels_last)
        self.stride = int(max(float(s) for s in model.stride))
        self.names = names_dict(getattr(model, "names", None)) or {i: str(i) for i in range(model.nc)}
        self.task, self.imgsz = getattr(model, "task", "detect"), None  # a .pt classifier takes any size

    def _load_torchscript(self, w: Path) -> None:
        extra = {METADATA_FILE: ""}
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated upstream; the format still loads fine
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(w), _extra_files=extra, map_location=self.device)
        except Exception as e:  # torch raises RuntimeError / others for non-TorchScript files
            raise UserError(
                f"{w} is not a loadable TorchScript file ({first_line(e)}) — re-export it with export.py"
            ) from None
        meta = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}
        self.stride, self.names = parse_metadata(meta, w)
        self.task, self.imgsz = metadata_task(meta)
        self.model = model.half() if self.fp16 else model.float()
        self.model.eval()

    def _load_onnx(self, w: Path) -> None:
        self.session = _onnx_session(w, self.device, self.threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.stride, self.names = parse_metadata(meta, w)
        self.task, self.imgsz = metadata_task(meta)
        inp = self.session.get_inputs()[0]
        self.input_name, self.output_names = inp.name, [o.name for o in self.session.get_outputs()]
        self.onnx_fp16 = "float16" in inp.type  # an ONNX file exported with --half wants fp16 input
        shape = inp.shape  # fixed ints, or strings for --dynamic axes
        self.static_shape = tuple(shape) if all(isinstance(s, int) for s in shape) else None

    def _load_dnn(self, w: Path) -> None:
        """OpenCV DNN reads the graph; the metadata (stride, names) comes from the file's metadata_props (onnx)."""
        import onnx  # heavy: only for this path's metadata (onnxruntime is not used here)

        try:
            self.session = cv2.dnn.readNetFromONNX(str(w))
            proto = onnx.load(str(w), load_external_data=False)
        except (cv2.error, Exception) as e:  # OpenCV builds differ in the operators they read
            raise UserError(
                f"OpenCV {cv2.__version__} DNN cannot read {w} ({first_line(e, limit=160)}) — run it without --dnn "
                f"(onnxruntime), or export with an older --opset"
            ) from None
        meta = {p.key: p.value for p in proto.metadata_props}
        self.stride, self.names = parse_metadata(meta, w)
        self.task, self.imgsz = metadata_task(meta)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.static_shape = shape if all(isinstance(d, int) and d > 0 for d in shape) else None
        self.onnx_fp16 = proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16

    def _load_openvino(self, w: Path) -> None:
        ov = import_openvino(f"running {w}")
        if not w.with_suffix(".bin").is_file():
            raise UserError(
                f"{w} has no weights file {w.with_suffix('.bin').name} beside it — copy the whole "
                f"*{OPENVINO_DIR_SUFFIX} folder, or re-export with export.py"
            )
        if self.device.type != "cpu":
            LOGGER.info(f"OpenVINO runs {w.name} on the CPU (outputs are moved to {self.device})")
        core = ov.Core()
        try:
            model = core.read_model(str(w))
            # f32: on CPUs with AVX512-BF16 / AMX the CPU plugin's default precision is bf16, which moved a trained
            # ConvNeXt-atto's scores by up to 0.016 and boxes by up to 8 px at 320 px (measured); f32: 6e-7, 4e-4 px.
            config = {"INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = str(self.threads)
            self.session = core.compile_model(model, "CPU", config)
        except RuntimeError as e:  # OpenVINO reports unreadable / invalid IR as RuntimeError
            raise UserError(
                f"{w} is not a loadable OpenVINO model ({first_line(e)}) — re-export it with export.py"
            ) from None
        meta = openvino_metadata(w, model)
        self.stride, self.names = parse_metadata(meta, w)
        self.task, self.imgsz = metadata_task(meta)
        # INT8 from the graph itself (NNCF's FakeQuantize ops), so an INT8 export of YOLOv5's or a lone .xml counts too
        self.int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        if self.int8:
            LOGGER.info(f"{w.name}: INT8 OpenVINO model (post-training quantized)")
        inp = model.inputs[0]
        self.input_dtype = np.float16 if inp.get_element_type() == ov.Type.f16 else np.float32
        shape = inp.get_partial_shape()
        self.static_shape = tuple(d.get_length() for d in shape) if shape.is_static else None

    def forward(self, im: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float 0-1 → decoded pred (B,N,5+nc) on self.device."""
        if self.fp16 and im.dtype != torch.float16:
            im = im.half()
        if self.pt or self.jit:
            y = self.model(im)
            return y[0] if isinstance(y, (tuple, list)) else y
        x = im.detach().cpu().numpy()
        if self.onnx and self.dnn:
            ys = [self._dnn_forward(c.astype(np.float16 if self.onnx_fp16 else np.float32)) for c in self._chunks(x)]
        elif self.onnx:
            x = x.astype(np.float16 if self.onnx_fp16 else np.float32)
            ys = [self.session.run(self.output_names, {self.input_name: c})[0] for c in self._chunks(x)]
        else:
            ys = [self.session(c.astype(self.input_dtype))[0] for c in self._chunks(x)]
        return torch.from_numpy(np.concatenate(ys).astype(np.float32)).to(self.device)

    def _dnn_forward(self, x: np.ndarray) -> np.ndarray:
        self.session.setInput(x)
        return self.session.forward()

    def _chunks(self, x: np.ndarray) -> list[np.ndarray]:
        """The batch as one piece, or for a fixed-shape file in pieces of its own batch size (other shapes: error)."""
        if self.static_shape is None:
            return [x]
        b = self.static_shape[0]
        if tuple(x.shape[1:]) != self.static_shape[1:] or len(x) % b:
            raise UserError(
                f"{self.weights} was exported for input {list(self.static_shape)} but got "
                f"{list(x.shape)} — pass --imgsz {self.static_shape[2]} {self.static_shape[3]} "
                f"(and a batch size divisible by {b}), or re-export with --dynamic"
            )
        return [x[i : i + b] for i in range(0, len(x), b)]

    def warmup(self, imgsz: tuple[int, int, int, int] = (1, 3, 640, 640)) -> None:
        """Run one dummy inference so the first real image is not charged for lazy initialisation (GPU, ONNX,
        OpenVINO)."""
        if self.device.type == "cpu" and not (self.onnx or self.openvino):
            return  # nothing lazy to initialise on CPU for PyTorch
        if self.static_shape is not None:
            imgsz = self.static_shape  # a fixed-shape exported file accepts only its own shape
        im = torch.zeros(*imgsz, dtype=torch.half if self.fp16 else torch.float, device=self.device)
        with torch.inference_mode():
            self.forward(im)
