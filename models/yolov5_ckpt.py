"""Import ultralytics/yolov5 checkpoints without running any code from the file.

A yolov5 .pt pickles whole nn.Module objects (models.yolo.DetectionModel, models.common.Conv, torch.nn.Conv2d, ...).
Unpickling such a file normally imports those classes and lets the file call whatever it names, so a downloaded file
could run anything. Here a restricted unpickler allows only tensor rebuilding and a few plain containers, and turns
every model / torch.nn class into an inert StandIn that just keeps the pickled attributes. Our Model is then built
from the pickled yaml dict, and the weights are read off the StandIn tree under yolov5's own key names
(model.0.conv.weight, ..., model.24.anchors), checked name by name, shape by shape and layer by layer, and loaded.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn

from models.yolo import Model
from utils.core.errors import UserError, first_line
from utils.core.names import names_dict

# models.yolo.DetectionModel since the classification release (2022); older files name it models.yolo.Model
MODEL_CLASSES = ("models.yolo.DetectionModel", "models.yolo.Model")
_MAX_DEPTH = 32  # module nesting of a yolov5 model is 5; a deeper (or cyclic) tree is not a model
_TENSOR_REBUILDERS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
)  # the rebuild functions torch's weights_only loader allows
_STORAGES = (
    "HalfStorage",
    "FloatStorage",
    "DoubleStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
)
# numpy objects (best_fitness is a numpy array in mid-training files): recorded inertly, never rebuilt
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class StandIn:
    """An inert record of one pickled object of a class the file names (a yolov5 layer, a torch.nn module, a numpy
    array): the constructor arguments (when the pickle calls it) and the pickled state, nothing else. It has no
    behaviour, so no method of the file's classes can run. Each class the file names gets its own subclass whose
    `pickled_as` is that class's "module.Name"."""

    pickled_as = ""
    args: tuple = ()  # class-level defaults: pickle's NEWOBJ creates instances without calling __init__
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Refused(Exception):
    """Something the pickle asks for that is not allowed (raised inside the unpickler, a UserError outside); `what`
    completes "refused to load — it ..."."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _path_text(*parts: Any) -> str:
    """pathlib paths (yolov5's opt holds some) become their text: building a Path touches no file, but a str is
    enough and a WindowsPath cannot be built on Linux."""
    pure = PureWindowsPath if any("\\" in str(p) or ":" in str(p)[1:2] for p in parts) else PurePosixPath
    return str(pure(*[str(p) for p in parts]))


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 pickles bytes (numpy's raw data) as _codecs.encode(text, 'latin1'); only that use is allowed,
    not the codec machinery in general."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"calls _codecs.encode with {str(encoding)[:40]!r}, not with 'latin1'")
    return text.encode("latin1")


class _Sealed:
    """A fresh handle on one allowed function per lookup. Pickle's BUILD opcode writes attributes onto whatever
    object is on its stack; aimed at a bare function it could rewrite, say, torch's _rebuild_tensor_v2.__defaults__
    for the rest of the process. On a _Sealed it is refused."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused(f"writes an attribute onto the function {getattr(self.fn, '__name__', '?')}")

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"writes state onto the function {getattr(self.fn, '__name__', '?')}")


def _allowed_functions() -> dict[tuple[str, str], Any]:
    """(module, name) -> function the pickle may call: tensor rebuilding, bytes, paths (each handed out _Sealed)."""
    table: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_bytes}
    table.update(
        {("torch._utils", n): getattr(torch._utils, n) for n in _TENSOR_REBUILDERS if hasattr(torch._utils, n)}
    )
    table.update(
        {
            ("pathlib", n): _path_text
            for n in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")
        }
    )
    return table


def _allowed_values() -> dict[tuple[str, str], Any]:
    """(module, name) -> classes and constants the pickle may name: all immutable (C types and torch dtypes), so
    BUILD cannot change them."""
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    table.update({("torch", n): v for n, v in vars(torch).items() if isinstance(v, torch.dtype)})
    return table


_FUNCTIONS, _VALUES = _allowed_functions(), _allowed_values()


def _is_layer_module(module: str) -> bool:
    """yolov5's models.* and torch's nn modules: their classes become StandIns."""
    return module == "models" or module.startswith(("models.", "torch.nn."))


class RestrictedUnpickler(pickle.Unpickler):
    """find_class answers only from _VALUES / _FUNCTIONS or with a StandIn subclass; any other global (os.system,
    builtins.eval, subprocess.*, an unknown class) raises before anything is called. StandIn classes are made per
    unpickler, so a pickle that writes attributes onto one cannot reach another load."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[str, type[StandIn]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's) writes Python 2 names (__builtin__.set, commands.check_call): map them back the
        # way pickle's own find_class would, so that checks and messages see the Python 3 name
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _VALUES:
            return _VALUES[key]
        if key in _FUNCTIONS:
            return _Sealed(_FUNCTIONS[key])
        if module == "torch" and name in _STORAGES:  # torch's zip loader answers these itself; here for a bare
            return torch.serialization.StorageType(name)  # Unpickler. Fresh each time: it only carries a dtype
        if _is_layer_module(module) or key in _NUMPY:
            full = f"{module}.{name}"
            if full not in self._stand_ins:
                self._stand_ins[full] = type(name.rsplit(".", 1)[-1], (StandIn,), {"pickled_as": full})
            return self._stand_ins[full]
        raise _Refused(f"pickles {f'{module}.{name}'[:100]}, which is neither a tensor nor a model layer")


# torch.load(pickle_module=...) wants a module-like object: its zip loader subclasses `Unpickler` and routes every
# global through our find_class with super() (torch/serialization.py, _load's UnpicklerWrapper; the tests check that a
# refused global does stop a load). No `load`: only torch's legacy (pre-zip) reader calls it, and _check_zip refuses
# those files first, so that reader (which may also write .patch files) never runs.
_PICKLE_MODULE = SimpleNamespace(__name__="yolov5_restricted_pickle", Unpickler=RestrictedUnpickler)


def is_torch_zip(path: str | Path) -> bool:
    """True for torch's zip format (what torch.save writes since 1.6): the same first-bytes test torch.load uses to
    pick its zip reader, and a readable zip directory."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" and zipfile.is_zipfile(path)


def _check_zip(path: Path) -> None:
    """Only torch's zip format goes to torch.load here: a legacy file would take torch's other reader, and a
    TorchScript archive would be handed to torch.jit.load (which runs the code it holds)."""
    if not is_torch_zip(path):
        raise UserError(
            f"{path}: not a zip-format torch checkpoint (the legacy format of torch < 1.6 is not "
            f"imported) — pass a .pt written by train.py or by a current ultralytics/yolov5"
        )
    with zipfile.ZipFile(path) as z:
        if any(n.split("/", 1)[-1] == "constants.pkl" for n in z.namelist()):
            raise UserError(
                f"{path} is a TorchScript archive, not a checkpoint — pass a .pt written by train.py "
                f"or ultralytics/yolov5 (run a TorchScript file under a .torchscript name)"
            )


def read_pickle(path: str | Path) -> Any:
    """The object pickled in a torch zip file, rebuilt by RestrictedUnpickler: tensors, plain data and StandIns.
    A global that is not allowed is one UserError naming it; nothing from the file has run by then."""
    path = Path(path)
    _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE)
    except _Refused as e:
        raise UserError(
            f"{path}: refused to load — it {e.what}, and unpickling it could run code from the file — "
            f"pass a .pt written by train.py or by ultralytics/yolov5"
        ) from None
    except UserError:
        raise
    except Exception as e:  # corrupt or crafted data: torch and pickle raise many types
        raise UserError(
            f"{path} is not a readable checkpoint ({first_line(e)}) — pass a .pt written by train.py "
            f"or by ultralytics/yolov5"
        ) from None


@dataclass
class Yolov5Import:
    """What load_yolov5 read: our Model (float32, eval) with the file's weights, and facts about the file."""

    model: Model
    which: str  # "ema" or "model": the weights that were used (EMA when the file has it, like yolov5)
    epoch: int  # yolov5's epoch (-1: a finished, stripped file)
    best_fitness: float
    date: str


def load_yolov5(path: str | Path) -> Yolov5Import:
    """Our Model with the weights of an ultralytics/yolov5 detection checkpoint; UserError when it cannot be."""
    path = Path(path)
    ckpt = read_pickle(path)
    net, which = _pick_model(ckpt, path)
    model = _build_model(net.state, path)
    state, layers = collect_state(net, path)
    check_state(model, state, path)
    check_layers(model, layers, path)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    epoch, fitness, date = ckpt.get("epoch"), ckpt.get("best_fitness"), ckpt.get("date")
    return Yolov5Import(
        model=model.eval(),
        which=which,
        epoch=epoch if isinstance(epoch, int) else -1,
        best_fitness=float(fitness) if isinstance(fitness, (int, float)) else 0.0,
        date=date if isinstance(date, str) else "",
    )


def _pick_model(ckpt: Any, path: Path) -> tuple[StandIn, str]:
    """The pickled model to import: ckpt['ema'] when present, else ckpt['model'] (yolov5 does the same)."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), StandIn):
        raise UserError(
            f"{path} is neither a checkpoint of this project nor of ultralytics/yolov5 (no model) — pass "
            f"a .pt written by train.py or by ultralytics/yolov5"
        )
    which = "ema" if isinstance(ckpt.get("ema"), StandIn) else "model"
    net = ckpt[which]
    if net.pickled_as not in MODEL_CLASSES or not isinstance(net.state, dict):
        raise UserError(
            f"{path}: its model is a {net.pickled_as}, not a yolov5 detection model "
            f"({MODEL_CLASSES[0]}) — only detection checkpoints are imported"
        )
    return net, which


def _build_model(attrs: dict[str, Any], path: Path) -> Model:
    """Our Model from the pickled yaml dict (ours parses yolov5's yamls), with the file's names; strides must agree."""
    if not isinstance(attrs.get("yaml"), dict):
        raise UserError(
            f"{path}: the yolov5 model records no yaml dict — it cannot be rebuilt here; pass a .pt "
            f"written by yolov5's train.py"
        )
    cfg = deepcopy(attrs["yaml"])
    yaml_file = attrs.get("yaml_file")
    cfg["yaml_file"] = yaml_file if isinstance(yaml_file, str) and yaml_file else "yolov5 model"
    try:
        model = Model(cfg)
    except UserError as e:
        raise UserError(f"{path}: its ultralytics/yolov5 model cannot be built here: {e}") from None
    names = names_dict(attrs.get("names") if isinstance(attrs.get("names"), (list, tuple, dict)) else None)
    if len(names) == model.nc:
        model.names = names
    stride = attrs.get("stride")
    if isinstance(stride, torch.Tensor) and stride.tolist() != model.stride.tolist():
        raise UserError(
            f"{path}: the file's strides {stride.tolist()} differ from {model.stride.tolist()} of the "
            f"model its yaml builds here — the file may come from a modified yolov5"
        )
    return model


def collect_state(net: StandIn, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, StandIn]]:
    """(state dict, layers by name) read off a StandIn module tree the way nn.Module.state_dict does: `_parameters`
    and `_buffers` (less `_non_persistent_buffers_set`) of every module in `_modules`, keys joined with dots."""
    state: dict[str, torch.Tensor] = {}
    layers: dict[str, StandIn] = {}
    todo: list[tuple[str, Any, int]] = [("", net, 0)]
    while todo:
        name, m, depth = todo.pop()
        if not isinstance(m, StandIn) or not isinstance(m.state, dict) or depth > _MAX_DEPTH:
            raise UserError(
                f"{path}: layer {name or 'model'} is not a pickled module — the file is damaged or not a yolov5 model"
            )
        layers[name] = m
        prefix = f"{name}." if name else ""
        skip = m.state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for k, v in (m.state.get(group) or {}).items():
                if v is None or (group == "_buffers" and k in skip):
                    continue
                if not isinstance(v, torch.Tensor):
                    raise UserError(f"{path}: {prefix}{k} is not a tensor — the file is damaged or not a yolov5 model")
                state[prefix + str(k)] = v
        todo += [(prefix + str(k), c, depth + 1) for k, c in (m.state.get("_modules") or {}).items() if c is not None]
    return state, layers


def check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every key and shape of our model's state dict must be in the file, and nothing else: one UserError if not."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or extra or shapes):
        return
    found = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
    found += [f"{len(extra)} unexpected (e.g. {extra[0]})"] if extra else []
    if shapes:
        k = shapes[0]
        found.append(
            f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(own[k].shape)} here)"
        )
    raise UserError(
        f"{path}: its weights do not fit the model its yaml builds here: {', '.join(found)} — the file "
        f"may come from a modified (or fused) yolov5; retrain here from its yaml with train.py --cfg"
    )


_ALIASES = {"DetectionModel": "Model"}  # yolov5's class name -> ours, where they differ
# settings that change what a layer computes but not any weight shape: they must agree too
_LAYER_ATTRS = {
    "Conv2d": ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"),
    "BatchNorm2d": ("eps",),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "Upsample": ("size", "scale_factor", "mode", "align_corners"),
    "Bottleneck": ("add",),
    "Concat": ("d",),
    "Detect": ("nc", "no", "nl", "na"),
}


def check_layers(model: nn.Module, layers: dict[str, StandIn], path: Path) -> None:
    """Same layer tree: class names at every path (an activation: yaml key would give another activation) and
    the settings in _LAYER_ATTRS, plus each row's index and inputs (i, f)."""
    ours = dict(model.named_modules(remove_duplicate=False))  # shared modules (Conv's one SiLU) at every path
    extra = sorted(set(layers) - set(ours))
    if extra:
        raise UserError(
            f"{path}: the file has layers the yaml does not build here (e.g. {extra[0]}) — the file may "
            f"come from a modified yolov5"
        )
    for name, m in ours.items():
        kind, theirs = type(m).__name__, layers.get(name)
        their_kind = theirs.pickled_as.rsplit(".", 1)[-1] if theirs is not None else "nothing"
        if _ALIASES.get(their_kind, their_kind) != kind:
            raise UserError(
                f"{path}: layer {name or 'model'} is {their_kind} in the file but {kind} here — this "
                f"yolov5 model uses a layer this project does not build"
            )
        row = ("i", "f") if name.startswith("model.") and name.count(".") == 1 else ()
        for a in _LAYER_ATTRS.get(kind, ()) + row:
            mine, value = getattr(m, a, None), theirs.state.get(a)
            if isinstance(value, torch.Tensor) or type(mine) is not type(value) or mine != value:
                raise UserError(
                    f"{path}: layer {name} ({kind}) has {a}={value!r} in the file but {mine!r} here — "
                    f"the file may come from a modified yolov5"
                )
