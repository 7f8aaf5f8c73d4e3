"""torch.hub entry points, named and called as YOLOv5's are. Nothing is downloaded (unless backbone_weights names
an official ConvNeXt file instead of a path; Conv2Former weights are paths only).

    import torch
    model = torch.hub.load("path/to/this/repo", "custom", path="best.pt", source="local")  # a Detector
    print(model("data/images/shapes_1.jpg"))            # image 1/1 data/images/shapes_1.jpg 3 circles, 1 rectangle, ...
    model = torch.hub.load("path/to/this/repo", "yolov5_convnext", nc=3, source="local")  # untrained models.yolo.Model
    model = torch.hub.load("path/to/this/repo", "yolov5_conv2former", size="n", nc=3, source="local")
    model = torch.hub.load("path/to/this/repo", "yolov5s", nc=3, source="local")          # untrained YOLOv5s

torch.hub lists every public callable of this module as an entry point, so everything else is a module object or
starts with an underscore. torch.hub consumes `verbose=` itself; the entries take YOLOv5's `_verbose=` instead.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sys
import typing

_ROOT = pathlib.Path(__file__).resolve().parent


def _check_packages() -> None:
    """Refuse to load next to another project's `utils` / `models` (e.g. an ultralytics/yolov5 hub load earlier in
    the process): Python would hand back that package for our imports and fail somewhere deep with a wrong module."""
    for name in ("utils", "models"):
        mod = sys.modules.get(name)
        where = getattr(mod, "__file__", None)
        if mod is not None and (where is None or pathlib.Path(where).resolve().parent.parent != _ROOT):
            raise ImportError(
                f"another '{name}' package ({where or mod}) is already imported — this repository's "
                f"'{name}' cannot be loaded next to it: call torch.hub.load in a fresh Python process"
            )


_check_packages()
# torch.hub puts the repository on sys.path only while it imports this file and calls the entry; adding it here also
# covers importing hubconf.py directly from another folder.
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from models import checkpoint as _checkpoint  # noqa: E402
from models import pretrained as _pretrained  # noqa: E402
from models import sizes as _sizes  # noqa: E402
from models import yolo as _yolo  # noqa: E402
from utils.core import device as _device  # noqa: E402
from utils.core import errors as _errors  # noqa: E402
from utils.core import log as _log  # noqa: E402
from utils.inference import api as _api  # noqa: E402
from utils.inference import classify_api as _classify_api  # noqa: E402
from utils.inference import slicing as _slicing  # noqa: E402

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

_Device = str | int | torch.device | None  # None: CUDA device 0 when there is one, else the CPU

# What the entries need, by import name (pip names: opencv-python-headless, pyyaml, pillow). torch.hub re-checks the
# list before calling an entry; a missing package already fails the imports above with Python's own message.
dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml", "PIL", "tqdm"]


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Only warnings from the project logger while loading when verbose is False; the level is restored after."""
    level = _log.LOGGER.level
    if not verbose:
        _log.LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _log.LOGGER.setLevel(level)


def _select(device: _Device) -> torch.device:
    """None picks the first CUDA device when there is one, else the CPU (YOLOv5's hub default)."""
    return _device.select_device("" if device is None else device, verbose=False)


def _check_filters(conf: float, iou: float, classes: Sequence[int] | None, max_det: int) -> None:
    """custom()'s NMS options, checked before the weights are read: one UserError line each."""
    for name, v in (("conf", conf), ("iou", iou)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise _errors.UserError(f"custom({name}={v!r}): must be a number in [0, 1] — e.g. {name}=0.25")
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
        raise _errors.UserError(f"custom(max_det={max_det!r}): must be a whole number >= 1 — e.g. max_det=1000")
    if classes is not None and (
        not isinstance(classes, (list, tuple))
        or not classes
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes)
    ):
        raise _errors.UserError(
            f"custom(classes={classes!r}): must be a list of class indices >= 0 — "
            f"e.g. classes=[0, 2], or None for all classes"
        )


def custom(
    path: str | pathlib.Path,
    autoshape: bool = True,
    device: _Device = None,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: Sequence[int] | None = None,
    max_det: int = 1000,
    imgsz: int | Sequence[int] = 640,
    agnostic: bool = False,
    _verbose: bool = True,
    slice: int | Sequence[int] | None = None,
    slice_overlap: float = _slicing.DEFAULT_OVERLAP,
    slice_merge: str = _slicing.DEFAULT_MERGE,
) -> nn.Module | _api.Detector | _classify_api.Classifier:
    """Trained weights: a .pt from train.py, or a .torchscript / .onnx from export.py. A classifier (from
    classify/train.py, or its export) gives a utils.inference.classify_api.Classifier: call it with images, get one
    ClassifyResult (top1, top5, top5conf, summary()) per image.

    autoshape=True: a utils.inference.api.Detector — call it with image paths, PIL images, numpy arrays (RGB, or BGR
    with bgr=True) or tensors, get Detections; conf, iou, classes, max_det, imgsz, agnostic set its NMS and input size
    (also settable afterwards: model.conf = 0.5); slice=(W, H) detects on overlapping W x H tiles plus the whole image
    (small objects in large images; slice_overlap, slice_merge as detect.py's --slice-overlap, --slice-merge).
    autoshape=False: the bare models.yolo.Model of a .pt (eval mode; tensors in, YOLOv5's (pred, raw) out; the NMS
    and slice options do not apply).
    """
    with _quiet(_verbose):
        dev = _select(device)
        if not autoshape:
            if pathlib.Path(path).suffix != ".pt":
                raise _errors.UserError(
                    f"custom({str(path)!r}, autoshape=False): the bare model needs a .pt "
                    f"checkpoint — pass the .pt, or use autoshape=True for exported files"
                )
            return _checkpoint.load_checkpoint_model(path, device=dev)
        _check_filters(conf, iou, classes, max_det)
        classes = list(classes) if classes is not None else None
        model = _api.load_model(
            path,
            device=dev,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            classes=classes,
            agnostic=agnostic,
            max_det=max_det,
            slice=slice,
            slice_overlap=slice_overlap,
            slice_merge=slice_merge,
        )
        if model.backend.task == "classify":  # a classifier file: top-k per image instead of boxes
            return _classify_api.load_classifier(path, device=dev, backend=model.backend)
        return model


def _nc(entry: str, nc: int | None, classes: int | None) -> int | None:
    """The class count from nc or YOLOv5's spelling `classes` (both may be given only when they agree)."""
    if nc is not None and classes is not None and nc != classes:
        raise _errors.UserError(f"{entry}(nc={nc}, classes={classes}): two different class counts — pass one of them")
    n = nc if nc is not None else classes
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise _errors.UserError(f"{entry}(nc={n!r}): the class count must be a whole number >= 1 — e.g. nc=3")
    return n


def _build(
    entry: str,
    cfg: str | pathlib.Path,
    nc: int | None,
    channels: int,
    pretrained: bool,
    autoshape: bool,
    device: _Device,
) -> _yolo.Model:
    """An untrained Model from a yaml; the refusals a YOLOv5 user needs to see for pretrained / autoshape."""
    if pretrained:
        theirs = (
            f"ultralytics' {entry}.pt or " if entry in ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x") else ""
        )
        raise _errors.UserError(
            f"{entry}(pretrained=True): no pretrained detection weights are shipped and nothing is downloaded — "
            f"load a .pt you have ({theirs}a best.pt from train.py) with torch.hub.load(repo, 'custom', "
            f"path='{entry if theirs else 'best'}.pt', source='local'), or train one: "
            f"python train.py --cfg {pathlib.Path(cfg).name}"
        )
    if autoshape:
        raise _errors.UserError(
            f"{entry}(autoshape=True): an untrained model has nothing to detect — train it, then "
            f"torch.hub.load(repo, 'custom', path='best.pt', source='local') returns the Detector"
        )
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise _errors.UserError(f"{entry}(channels={channels!r}): must be a whole number >= 1 — e.g. channels=3")
    return _yolo.Model(cfg, ch=channels, nc=nc).to(_select(device))


def _entry(
    entry: str,
    cfg: Callable[[], pathlib.Path],
    nc: int | None,
    classes: int | None,
    channels: int,
    pretrained: bool,
    autoshape: bool,
    device: _Device,
    verbose: bool,
    backbone_weights: str | pathlib.Path | None = None,
) -> _yolo.Model:
    """What every model entry does, quiet unless verbose: the yaml cfg() resolves to (its refusals first), built
    untrained; backbone_weights copied onto the backbone when given; the model summary logged when verbose."""
    with _quiet(verbose):
        model = _build(entry, cfg(), _nc(entry, nc, classes), channels, pretrained, autoshape, device)
        if backbone_weights is not None:
            _pretrained.load_backbone_weights(model, backbone_weights)
        if verbose:
            model.info()
        return model


def _convnext_cfg(cfg: str | pathlib.Path | None, size: str | None, version: int | None) -> pathlib.Path:
    """cfg itself, or the shipped yaml for a ConvNeXt size and version (V1 tiny is models/yolov5_ConvNeXt.yaml)."""
    if cfg is not None:
        extra = ", ".join(f"{k}={v!r}" for k, v in (("size", size), ("version", version)) if v is not None)
        if extra:
            raise _errors.UserError(
                f"yolov5_convnext(cfg={str(cfg)!r}, {extra}): give either cfg or size/version "
                f"— the yaml already states its backbone"
            )
        return _yolo.find_cfg(cfg, flag="yolov5_convnext(cfg=...)")
    size, version = size or "tiny", 1 if version is None else version
    if version not in (1, 2):
        raise _errors.UserError(f"yolov5_convnext(version={version!r}): ConvNeXt versions are 1 and 2")
    name = "yolov5_ConvNeXt" + ("V2" if version == 2 else "") + ("" if (size, version) == ("tiny", 1) else f"-{size}")
    return _yolo.find_cfg(f"{name}.yaml", flag=f"yolov5_convnext(size={size!r}, version={version})")


def yolov5_convnext(
    cfg: str | pathlib.Path | None = None,
    size: str | None = None,
    version: int | None = None,
    nc: int | None = None,
    channels: int = 3,
    backbone_weights: str | pathlib.Path | None = None,
    pretrained: bool = False,
    autoshape: bool = False,
    device: _Device = None,
    classes: int | None = None,
    _verbose: bool = True,
) -> _yolo.Model:
    """An untrained ConvNeXt-YOLOv5 Model (training mode; default cfg models/yolov5_ConvNeXt.yaml, ConvNeXt-T).

    size ('atto' ... 'xlarge') and version (1 or 2) pick a shipped yaml instead; nc (or classes) overrides the
    yaml's class count; backbone_weights: an ImageNet ConvNeXt file (official / torchvision / timm keys) copied onto
    the backbone — an official name such as 'convnext_tiny_1k' is downloaded, a path never is.
    """
    return _entry(
        "yolov5_convnext",
        lambda: _convnext_cfg(cfg, size, version),
        nc,
        classes,
        channels,
        pretrained,
        autoshape,
        device,
        _verbose,
        backbone_weights,
    )


def _conv2former_cfg(cfg: str | pathlib.Path | None, size: str | None) -> pathlib.Path:
    """cfg itself, or the shipped yaml of a Conv2Former size (default t)."""
    if cfg is not None:
        if size is not None:
            raise _errors.UserError(
                f"yolov5_conv2former(cfg={str(cfg)!r}, size={size!r}): give either cfg or size — the yaml already "
                f"states its backbone"
            )
        return _yolo.find_cfg(cfg, flag="yolov5_conv2former(cfg=...)")
    size = "t" if size is None else size
    if size not in _sizes.CONV2FORMER_SIZES:
        raise _errors.UserError(
            f"yolov5_conv2former(size={size!r}): unknown size — use one of {', '.join(_sizes.CONV2FORMER_SIZES)}"
        )
    return _yolo.find_cfg(f"yolov5_Conv2Former-{size}.yaml", flag=f"yolov5_conv2former(size={size!r})")


def yolov5_conv2former(
    cfg: str | pathlib.Path | None = None,
    size: str | None = None,
    nc: int | None = None,
    channels: int = 3,
    backbone_weights: str | pathlib.Path | None = None,
    pretrained: bool = False,
    autoshape: bool = False,
    device: _Device = None,
    classes: int | None = None,
    _verbose: bool = True,
) -> _yolo.Model:
    """An untrained Conv2Former-YOLOv5 Model (training mode; default models/yolov5_Conv2Former-t.yaml).

    size ('n', 't', 's', 'b', 'b_22k', 'l') picks a shipped yaml instead of cfg; nc (or classes) overrides the yaml's
    class count; backbone_weights: the path of an official Conv2Former ImageNet checkpoint (.pth.tar from the
    official repository; never downloaded), copied onto the backbone.
    """
    return _entry(
        "yolov5_conv2former",
        lambda: _conv2former_cfg(cfg, size),
        nc,
        classes,
        channels,
        pretrained,
        autoshape,
        device,
        _verbose,
        backbone_weights,
    )


def _yolov5_entry(size: str) -> Callable[..., _yolo.Model]:
    """The hub entry yolov5<size>, with YOLOv5's keywords in YOLOv5's order (torch.hub lists it as a module
    attribute; its name and docstring are what torch.hub.list / torch.hub.help show)."""
    name = f"yolov5{size}"

    def entry(
        pretrained: bool = False,
        channels: int = 3,
        classes: int | None = None,
        autoshape: bool = False,
        _verbose: bool = True,
        device: _Device = None,
        nc: int | None = None,
    ) -> _yolo.Model:
        cfg = f"{name}.yaml"
        return _entry(name, lambda: _yolo.find_cfg(cfg), nc, classes, channels, pretrained, autoshape, device, _verbose)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"Untrained YOLOv5{size} (models/{name}.yaml); classes (YOLOv5's name) or nc sets the class count (default 80)."
    )
    return entry


yolov5n, yolov5s, yolov5m, yolov5l, yolov5x = (_yolov5_entry(size) for size in "nsmlx")
