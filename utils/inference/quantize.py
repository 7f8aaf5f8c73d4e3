"""INT8 OpenVINO models: NNCF post-training quantization on letterboxed training images (export.py --int8).

NNCF runs the fp32 OpenVINO model on a calibration set, records the range of every activation it will quantize and
inserts FakeQuantize ops; the CPU plugin then runs the convolutions and matrix products between them with int8
kernels (VNNI / AMX where the CPU has them). The settings `Int8Config()` holds by default were measured on the
quick-start model (README, "INT8 OpenVINO"; benchmarks/int8.py --settings): the MIXED preset, NNCF's default model
type, the Detect layer kept in float, fast bias correction, 300 images.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.core import args as A
from utils.core.errors import UserError
from utils.core.log import LOGGER
from utils.dataloaders.augment import letterbox
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import LoadImagesAndLabels, chw_rgb, find_images

INT8_IMAGES = 300  # calibration images by default: NNCF's own subset size, and what YOLOv5's --int8 feeds it
PRESETS = ("mixed", "performance")  # NNCF's QuantizationPreset values
# Ops whose inputs only carry shapes (the grid's ShapeOf branch), or that end the walk back from the output
_SHAPE_OPS = ("ShapeOf",)
_HEAD_CONVS = ("Convolution",)


@dataclass(frozen=True)
class Int8Config:
    """NNCF's options as export.py uses them; the benchmark's --settings varies them one at a time.

    preset: "mixed" (symmetric weights, asymmetric activations) or "performance" (symmetric both: cheaper
    kernels); on the quick-start model performance lost 0.009 mAP50-95 at 640 px and was no faster.
    transformer: NNCF's ModelType.TRANSFORMER (ConvNeXt has LayerNorm + GELU + MatMul blocks): lost 0.031 at 640 px.
    float_head: keep the Detect layer — its three output convolutions and the box decode — out of quantization:
    otherwise NNCF quantizes the input of the wh branch's square ((2 sigmoid)^2 x anchor), which put the 99th
    percentile of box-size errors at 7.4 % instead of 2 % (320 px), for no measurable speed.
    fast_bias_correction: NNCF's default; the full bias correction took 2.4x as long and scored no higher."""

    preset: str = "mixed"
    transformer: bool = False
    float_head: bool = True
    fast_bias_correction: bool = True

    def metadata(self, images: int) -> dict[str, Any]:
        """What the export's <stem>.yaml records next to stride and names."""
        return {"int8": True, "int8_images": images, "int8_preset": self.preset, "int8_float_head": self.float_head}


@dataclass
class Calibration:
    """Training images letterboxed to the export's input as val.py's square batches are (long side to the size,
    then padded with grey, never enlarged past it), in groups of the export's batch size: NNCF's calibration set.
    Images are read when NNCF asks for them, so 300 images at 640 px never sit in memory together."""

    dataset: LoadImagesAndLabels
    hw: tuple[int, int]
    groups: list[list[int]] = field(default_factory=list)  # dataset indices of each calibration batch

    @classmethod
    def from_split(cls, train: Any, hw: tuple[int, int], batch: int, images: int) -> Calibration:
        """`images` of the split, evenly spaced through it (a folder sorted by name or by class still gives a mix);
        all of them when it has fewer."""
        ds = LoadImagesAndLabels(train, max(hw), batch_size=batch, augment=False, prefix="INT8 calibration: ")
        n = min(images, ds.n)
        if n < images:
            LOGGER.warning(f"WARNING: --int8-images {images}: the train split has {ds.n} images, calibrating on all")
        picked = np.linspace(0, ds.n - 1, n).round().astype(int)
        padded = np.resize(picked, -(-n // batch) * batch)  # the last batch filled from the first images again
        return cls(ds, hw, padded.reshape(-1, batch).tolist())

    @property
    def images(self) -> int:
        return len({i for g in self.groups for i in g})

    def batch(self, group: list[int]) -> np.ndarray:
        """(B, 3, h, w) float32 0-1 RGB, the input DetectBackend gives the exported model."""
        ims = [letterbox(self.dataset.load_image(i)[0], self.hw, auto=False, scaleup=False)[0] for i in group]
        return np.stack([chw_rgb(im) for im in ims]).astype(np.float32) / 255


def import_nncf() -> Any:
    """The nncf module, or a one-line UserError saying how to install it."""
    try:
        import nncf  # optional dependency: only export.py --int8 needs it (~100 MB with its dependencies)
    except ImportError:
        raise UserError("--int8 needs the nncf package — pip install nncf (or export without --int8)") from None
    return nncf


def check_nncf_installed() -> None:
    """import_nncf's UserError when nncf is not installed, found without importing it: the flag check stays cheap
    (importing nncf takes seconds) and a process that only checks flags never loads it."""
    try:
        found = importlib.util.find_spec("nncf") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds a None / spec-less stand-in
        found = False
    if not found:
        import_nncf()  # raises the one-line error (or, if nncf imports after all, returns it)


def check_int8(fmts: list[str], data: str | Path | dict | None, images: int) -> Any:
    """Every --int8 flag, before the checkpoint is loaded; returns the train split to calibrate on."""
    other = [f for f in fmts if f != "openvino"]
    if other:
        raise UserError(
            f"--int8 quantizes OpenVINO models only, not {other[0]} — use --include openvino --int8 and export "
            f"{', '.join(other)} in a separate call"
        )
    if not data:
        raise UserError(
            "--int8 calibrates on training images — add --data with their dataset yaml, e.g. --data data.yaml"
        )
    A.check_int("int8_images", images, lo=1, todo=f"the number of calibration images, e.g. {INT8_IMAGES}")
    check_nncf_installed()
    d = check_dataset(data)
    if not d.get("train"):
        raise UserError(
            f"dataset yaml {d.get('yaml_file', data)} has no 'train' split for --int8 to calibrate on — add "
            f"train: images/train"
        )
    find_images(d["train"], prefix="--int8 calibration: ")  # a UserError when the split holds no image
    return d["train"]


def detect_head_ops(model: Any) -> list[str]:
    """Names of the Detect layer's ops in an OpenVINO graph: everything on a path back from the outputs up to and
    including the convolutions that make the raw head maps. Found by the graph, not by names, so a model with its
    Detect at another row (or a YOLOv5 export) gets the same scope; the walk does not follow a ShapeOf (the grid is
    built from the input's shape, and its branch leads back into the network)."""
    seen: dict[str, Any] = {}
    todo = [r.input_value(0).get_node() for r in model.get_results()]
    while todo:
        op = todo.pop()
        name = op.get_friendly_name()
        if name in seen:
            continue
        seen[name] = op
        if op.get_type_name() not in _HEAD_CONVS + _SHAPE_OPS:
            todo.extend(i.get_source_output().get_node() for i in op.inputs())
    return [n for n, op in seen.items() if op.get_type_name() not in ("Constant", "Parameter")]


@contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs one INFO line per op it leaves unquantized (~100 for the Detect layer): warnings only meanwhile."""
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def quantize_openvino(model: Any, calib: Calibration, config: Int8Config = Int8Config()) -> Any:
    """An INT8 copy of an fp32 OpenVINO model (ov.Model) quantized by NNCF on calib."""
    nncf = import_nncf()
    A.check_choice("int8_preset", config.preset, PRESETS)
    ignored = nncf.IgnoredScope(names=detect_head_ops(model), validate=False) if config.float_head else None
    with _quiet_nncf():
        return nncf.quantize(
            model,
            nncf.Dataset(calib.groups, calib.batch),
            preset=nncf.QuantizationPreset(config.preset),
            subset_size=len(calib.groups),
            fast_bias_correction=config.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if config.transformer else None,
            ignored_scope=ignored,
        )
