"""Load ImageNet ConvNeXt weights (official V1/V2, torchvision or timm key names, Paddle .pdparams) onto a Model's
ConvNeXt stages, and official Conv2Former weights onto its Conv2Former stages.

    from models.pretrained import load_backbone_weights
    report = load_backbone_weights(model, "convnext_tiny_1k")        # official name: downloaded to the torch hub cache
    report = load_backbone_weights(model, "weights/convnext_tiny_1k_224_ema.pth", sha256="<64 hex digits>")
    report = load_backbone_weights(model, torchvision_model.state_dict())
    report = load_backbone_weights(model, "ConvNeXt_tiny_pretrained.pdparams")  # PaddleClas: no PaddlePaddle needed
    report = load_backbone_weights(c2f_model, "conv2former_t.pth.tar")  # official Conv2Former: path only, EMA preferred

Training files give their EMA weights when they hold both (ema=False: the others). Conv2Former weights go to
models/conv2former_weights.py (its own key map onto `Conv2Former_Block` rows). Every ConvNeXt source format is first
rewritten to the official key names ("canonical" here), then mapped onto the rows that hold `ConvNeXt_Block` stage s:
`downsample_layers.s.k.*` -> `model.<row>.downsample.k.*`, `stages.s.j.*` -> `model.<row>.blocks.j.*`. All checks
run before the first tensor is copied, so a refused file leaves the model untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from models.checkpoint import checkpoint_record
from models.classifier import load_backbone_rows
from models.common import ConvNeXt_Block
from models.conv2former_weights import (
    TRAINING_FILE_GLOBALS,
    check_source_is_file,
    conv2former_rows,
    is_conv2former_state,
    load_conv2former,
    shape_of_rows,
    shape_of_state,
)
from models.sizes import CONVNEXT_SIZES, official_sizes
from utils.core.download import download_file, file_sha256, normalise_sha256
from utils.core.errors import UserError, first_line
from utils.core.log import LOGGER
from utils.core.parallel import unwrap
from utils.core.safe_pickle import load_array_pickle

V1_URL = "https://dl.fbaipublicfiles.com/convnext/"
V2_URL = "https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/"
V1_SIZES, V2_SIZES = official_sizes(1), official_sizes(2)  # names official_url accepts
_CLASSIFIER = re.compile(r"^(norm|head|classifier|fc)\.|^head$")  # ImageNet classifier parts of every format


@dataclass
class LoadReport:
    """What load_backbone_weights did: our parameter names loaded, checkpoint keys skipped, our params missing."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    format: str = ""
    entry: str = ""  # the training file's entry the weights came from ('state_dict_ema: EMA, ...'; '' when bare)

    def __str__(self) -> str:
        entry = f" [{self.entry}]" if self.entry else ""
        return (
            f"Backbone weights from {self.source}{entry} ({self.format} format): {len(self.loaded)} loaded, "
            f"{len(self.skipped)} skipped (classifier), {len(self.missing)} missing"
        )


# --------------------------------------------------------------------------------------------------- official names
def official_url(name: str) -> str:
    """Official download URL for a short name (convnext_tiny_1k, convnext_base_22k_1k_384, convnextv2_atto_1k)
    or a full official file name. Unknown names raise UserError listing the pattern."""
    n = Path(name).name
    if n.endswith((".pth", ".pt")):
        return (V2_URL if n.startswith("convnextv2_") else V1_URL) + n
    m = re.fullmatch(r"convnext(v2)?_([a-z]+)_(1k|22k|22k_1k)(?:_(224|384))?", n)
    if m is None or (m[1] and (m[2] not in V2_SIZES or m[3] != "1k")) or (not m[1] and m[2] not in V1_SIZES):
        raise UserError(
            f"unknown weights name or file {name!r} — pass an existing file or an official name: "
            f"convnext_<{'|'.join(V1_SIZES)}>_<1k|22k|22k_1k>[_384] or "
            f"convnextv2_<{'|'.join(V2_SIZES)}>_1k"
        )
    version, size, data, res = m[1], m[2], m[3], m[4] or "224"
    if version:
        return f"{V2_URL}convnextv2_{size}_1k_{res}_ema.pt"
    ema = "_ema" if res == "224" and (data == "1k" or (data == "22k_1k" and size == "xlarge")) else ""
    return f"{V1_URL}convnext_{size}_{data}_{res}{ema}.pth"


def _torch_load(path: Path) -> Any:
    """torch.load that cannot run code (weights_only); any failure is one UserError line."""
    try:
        with torch.serialization.safe_globals(TRAINING_FILE_GLOBALS):  # timm training files pickle their args
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many exception types for corrupt / foreign files
        # weights_only failures open with a paragraph of advice; the reason follows "WeightsUnpickler error:"
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please use|\n|$)", str(e))
        raise UserError(
            f"cannot read weights file {path}: {f'refused by the safe loader: {m[1]}' if m else first_line(e)} — "
            f"pass a ConvNeXt .pth/.pt state dict or an official Conv2Former .pth.tar"
        ) from None


# ------------------------------------------------------------------------------------------------- Paddle .pdparams
_PADDLE_TODO = "pass a ConvNeXt .pdparams saved by paddle.save(model.state_dict()) (PaddleClas / PaddleDetection)"
_TORCH_LEGACY = b"\x80\x02\x8a\x0a"  # torch < 1.6 files start by pickling a 10-byte magic number (protocol 2)


def _is_paddle_file(path: Path) -> bool:
    """A .pdparams, or any plain pickle that is neither torch's zip format nor its legacy one (torch.load with
    weights_only refuses those anyway, so reading them as paddle.save files takes nothing away)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip is torch.save's format, whatever the suffix
        return False
    plain_pickle = len(head) == 4 and head[0] == 0x80 and head[1] in (2, 3, 4, 5) and head != _TORCH_LEGACY
    return path.suffix == ".pdparams" or plain_pickle


def _paddle_tensors(obj: Any) -> Any:
    """paddle.save's data with its numpy arrays as tensors: a state dict is {name: ndarray} (Paddle 2 converts every
    Tensor; the "StructuredToParameterName@@" name table is plain strings and drops out in _unwrap); a Tensor inside
    other objects is pickled as (its internal name, ndarray)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return torch.from_numpy(obj[1])
    if isinstance(obj, dict):
        return {k: _paddle_tensors(v) for k, v in obj.items() if isinstance(k, str)}
    return obj


def _from_paddle(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """PaddleClas / PaddleDetection ConvNeXt: the official names, but paddle.nn.Linear stores its weight as [in, out],
    the transpose of torch's. (head.weight is one too; the classifier is skipped before any converter runs.)"""
    if v.ndim == 2 and re.search(r"\.pwconv[12]\.weight$", k):
        v = v.t().contiguous()
    return _from_official(k, v)


def _load_file(path: Path) -> tuple[Any, str]:
    """(loaded object, format when the keys cannot tell it: "paddle", else "")."""
    if _is_paddle_file(path):  # a pickle: read by the restricted reader, so nothing in the file runs
        return _paddle_tensors(load_array_pickle(path, _PADDLE_TODO)), "paddle"
    return _torch_load(path), ""


@dataclass
class Weights:
    """A weights source, read once: a flat state dict with what its keys cannot tell, or (a checkpoint of this project)
    its model record."""

    where: str  # the display name: path, URL or "state dict"
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    fmt: str = ""  # the format when the keys cannot tell it ("paddle"), else ""
    entry: str = ""  # the training file's entry it came from (_unwrap; "ema" / "model" for a record)
    record: dict[str, Any] | None = None  # a checkpoint of ours: models.checkpoint.model_record output


def read_weights(source: Any, sha256: str | None = None, ema: bool | None = None) -> Weights:
    """Read a path, an official name or an (optionally wrapped) dict: a flat state dict, or the model record of a
    checkpoint of ours (its EMA unless ema is False)."""
    fmt = ""
    if isinstance(source, dict):
        if sha256:
            LOGGER.warning("WARNING ⚠️ a SHA-256 was given for an in-memory state dict: nothing to check")
        return _weights_of(source, "state dict", fmt, ema)
    path = Path(source)
    if path.is_file():
        if sha256 and (got := file_sha256(path)) != sha256:
            raise UserError(f"{path} has sha256 {got}, not the expected {sha256} — use the right file or hash")
        (obj, fmt), where = _load_file(path), str(path)
    else:
        where = official_url(str(source))  # UserError for names that are neither files nor official names
        obj = _download_official(where, sha256)
    if not isinstance(obj, dict):
        raise UserError(f"{where} holds a {type(obj).__name__}, not a state dict — pass ConvNeXt ImageNet weights")
    return _weights_of(obj, where, fmt, ema)


def _weights_of(obj: dict, where: str, fmt: str, ema: bool | None) -> Weights:
    if (record := checkpoint_record(obj, where, ema)) is not None:
        return Weights(where=where, entry="ema" if record is obj.get("ema") else "model", record=record)
    sd, entry = _unwrap(obj, where, ema)
    return Weights(where=where, state=sd, fmt=fmt, entry=entry)


def _download_official(url: str, sha256: str | None) -> Any:
    """The loaded object of an official weights file: from the torch hub cache when that copy is good, else
    downloaded there (utils.core.download: time limit, retries, moved into place only once complete and loadable)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cache.is_file():
        obj = _cached(cache, sha256)
        if obj is not None:
            return obj
    loaded: dict[str, Any] = {}

    def check(p: Path) -> None:  # load once, on the temp file, so a file that cannot load never lands in the cache
        loaded["obj"] = torch.load(p, map_location="cpu", weights_only=True)

    download_file(url, cache, sha256=sha256, check=check, context="--backbone-weights")
    return loaded["obj"]


def _cached(cache: Path, sha256: str | None) -> Any:
    """The cached file's object, or None (after one warning) when it cannot be read or has another SHA-256.

    An unreadable file is deleted (a truncated copy from an older downloader must not be trusted forever); a copy
    with another hash stays until a good download replaces it.
    """
    if sha256 and (got := file_sha256(cache)) != sha256:
        LOGGER.warning(f"WARNING ⚠️ cached {cache} has sha256 {got}, not the expected {sha256}: downloading again")
        return None
    try:
        return torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated: any torch error
        LOGGER.warning(
            f"WARNING ⚠️ cached {cache} cannot be read ({first_line(e, 100)}): deleting it and downloading again"
        )
        cache.unlink(missing_ok=True)
        return None


_RAW, _EMA = ("model", "state_dict"), ("model_ema", "state_dict_ema")  # weights / their EMA: ConvNeXt's, timm's files


def _pick_entry(obj: dict, where: str, ema: bool | None) -> tuple[dict, str]:
    """The state dict inside a training file and a note naming its entry ('' for a bare state dict). A file with
    both weights and their EMA gives the EMA (better weights at the end of a run), unless ema is False."""
    raw = next((k for k in _RAW if isinstance(obj.get(k), dict)), None)
    avg = next((k for k in _EMA if isinstance(obj.get(k), dict)), None)
    if (ema is True and avg is None) or (ema is False and raw is None and avg is not None):
        flag = "ema=True / --backbone-ema" if ema else "ema=False / --no-backbone-ema"
        raise UserError(
            f"{where} holds no {'EMA' if ema else 'non-EMA'} weights (entries: {[k for k in obj if k in _RAW + _EMA]})"
            f" — drop {flag}"
        )
    key = avg if avg is not None and ema is not False else raw
    if key is None:
        return obj, ""
    if raw is None or avg is None:
        return obj[key], key
    return obj[key], f"{avg}: EMA, preferred over {raw}" if key == avg else f"{raw}: not the EMA ({avg})"


def _unwrap(obj: dict, where: str, ema: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """{'model' / 'state_dict' / their EMAs 'model_ema' / 'state_dict_ema': sd} or a bare sd -> (sd with DDP/mmdet
    prefixes removed, the entry it came from: _pick_entry)."""
    obj, entry = _pick_entry(obj, where, ema)
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise UserError(f"{where} holds no tensors — pass a ConvNeXt state dict")
    for prefix in ("module.", "backbone."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd, entry


# ------------------------------------------------------------------------------------------- key formats -> canonical
_TV_BLOCK = {"block.0": "dwconv", "block.2": "norm", "block.3": "pwconv1", "block.5": "pwconv2"}
_TIMM_BLOCK = {
    "conv_dw": "dwconv",
    "norm": "norm",
    "mlp.fc1": "pwconv1",
    "mlp.fc2": "pwconv2",
    "gamma": "gamma",
    "mlp.grn.weight": "grn.gamma",
    "mlp.grn.bias": "grn.beta",
}


def _from_official(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    return (k, v) if re.match(r"(downsample_layers|stages)\.\d+\.\d+\.", k) else None


def _from_torchvision(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    m = re.fullmatch(r"features\.(\d+)\.(\d+)\.(.+)", k)
    if m is None:
        return None
    f, j, rest = int(m[1]), int(m[2]), m[3]
    if f % 2 == 0:  # features 0, 2, 4, 6: stem and downsamples, same sub-indices as official
        return f"downsample_layers.{f // 2}.{j}.{rest}", v
    if rest == "layer_scale":  # (d, 1, 1) -> (d,)
        return f"stages.{f // 2}.{j}.gamma", v.reshape(-1)
    layer, _, param = rest.rpartition(".")
    return (f"stages.{f // 2}.{j}.{_TV_BLOCK[layer]}.{param}", v) if layer in _TV_BLOCK else None


def _from_timm(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    if m := re.fullmatch(r"stem\.(\d)\.(weight|bias)", k):
        return f"downsample_layers.0.{m[1]}.{m[2]}", v
    if m := re.fullmatch(r"stages\.(\d)\.downsample\.(\d)\.(weight|bias)", k):
        return f"downsample_layers.{m[1]}.{m[2]}.{m[3]}", v
    m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)", k)
    if m is None:
        return None
    sub = m[3]
    if sub in _TIMM_BLOCK:  # gamma, mlp.grn.weight / bias: whole key renamed
        name = _TIMM_BLOCK[sub]
    else:  # layer.weight / layer.bias
        layer, _, param = sub.rpartition(".")
        if layer not in _TIMM_BLOCK:
            return None
        name = f"{_TIMM_BLOCK[layer]}.{param}"
    if name.startswith("grn."):
        v = v.reshape(1, 1, 1, -1)  # timm keeps GRN params 1-D; official / ours are (1, 1, 1, C)
    elif name.startswith("pwconv") and v.ndim == 4:
        v = v.flatten(1)  # conv_mlp variants (atto..nano) store 1x1 convs: (out, in, 1, 1) -> Linear (out, in)
    return f"stages.{m[1]}.{m[2]}.{name}", v


_FORMATS: dict[str, tuple[str, Callable]] = {  # name -> (key that identifies it, converter)
    "torchvision": (r"features\.0\.0\.weight", _from_torchvision),
    "timm": (r"stem\.0\.weight", _from_timm),
    "official": (r"downsample_layers\.0\.0\.weight", _from_official),
    "paddle": (r"downsample_layers\.0\.0\.weight", _from_paddle),  # official keys: only chosen by the file type
}


def to_canonical(
    sd: dict[str, torch.Tensor], where: str, fmt: str = ""
) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """(canonical state dict, skipped classifier keys, format name). fmt: the format when the keys cannot tell it
    ("paddle"); "" detects it from the keys. Unknown formats / keys raise UserError."""
    names = [fmt] if fmt else list(_FORMATS)
    fmt = next((name for name in names if any(re.fullmatch(_FORMATS[name][0], k) for k in sd)), None)
    if fmt is None:
        raise UserError(
            f"{where}: unknown key format (first keys: {list(sd)[:3]}) — expected official ConvNeXt "
            f"(downsample_layers.*, stages.*), torchvision (features.*) or timm (stem.*, stages.*.blocks.*)"
        )
    convert = _FORMATS[fmt][1]
    out: dict[str, torch.Tensor] = {}
    skipped, unknown = [], []
    for k, v in sd.items():
        if _CLASSIFIER.match(k):
            skipped.append(k)
            continue
        kv = convert(k, v)
        if kv is None:
            unknown.append(k)
        elif kv[0] in out:
            raise UserError(f"{where}: two keys map onto {kv[0]} — the file mixes key formats")
        else:
            out[kv[0]] = kv[1]
    if unknown:
        raise UserError(
            f"{where}: {len(unknown)} key(s) not understood in {fmt} format, e.g. {unknown[:3]} — "
            f"pass a plain ImageNet ConvNeXt classification checkpoint"
        )
    return out, skipped, fmt


# ---------------------------------------------------------------------------------------------------- size checking
def describe_canonical(sd: dict[str, torch.Tensor]) -> tuple[list[int], list[int], int]:
    """(depths, dims, version) of a canonical state dict."""
    dims = [
        int(sd[f"downsample_layers.{s}.{0 if s == 0 else 1}.weight"].shape[0])
        if f"downsample_layers.{s}.{0 if s == 0 else 1}.weight" in sd
        else 0
        for s in range(4)
    ]
    depths = [0, 0, 0, 0]
    for k in sd:
        if m := re.match(r"stages\.(\d)\.(\d+)\.", k):
            depths[int(m[1])] = max(depths[int(m[1])], int(m[2]) + 1)
    version = 2 if any(".grn." in k for k in sd) else 1
    return depths, dims, version


def _size_name(depths: list[int], dims: list[int], version: int) -> str:
    for name, s in CONVNEXT_SIZES.items():
        if list(s["depths"]) == list(depths) and list(s["dims"]) == list(dims):
            return f"ConvNeXt{'V2' if version == 2 else ''}-{name}"
    return f"ConvNeXt{'V2' if version == 2 else ''}(depths={depths}, dims={dims})"


def _stages_of(model: nn.Module) -> dict[int, ConvNeXt_Block]:
    stages = {m.stage: m for m in unwrap(model).modules() if isinstance(m, ConvNeXt_Block)}
    if not stages:
        raise UserError(
            "the model has no ConvNeXt_Block stages (nor Conv2Former_Block ones) — backbone weights only load onto "
            "ConvNeXt or Conv2Former yamls"
        )
    return stages


def _model_desc(stages: dict[int, ConvNeXt_Block]) -> tuple[list[int], list[int], int]:
    depths = [len(stages[s].blocks) if s in stages else 0 for s in range(4)]
    dims = [
        int(stages[s].blocks[0].dwconv.weight.shape[0]) if s in stages and len(stages[s].blocks) else 0
        for s in range(4)
    ]
    return depths, dims, next(iter(stages.values())).version


# ------------------------------------------------------------------------------------------------------------ loading
def _targets(stages: dict[int, ConvNeXt_Block]) -> dict[str, tuple[str, torch.Tensor]]:
    """canonical key -> (our parameter name, parameter) for every backbone parameter of the model."""
    out = {}
    for s, st in stages.items():
        prefix = f"model.{st.i}." if hasattr(st, "i") else f"stage{s}."
        for name, p in st.named_parameters():
            part, _, rest = name.partition(".")
            canon = f"downsample_layers.{s}.{rest}" if part == "downsample" else f"stages.{s}.{rest}"
            out[canon] = (prefix + name, p)
    return out


def _load_conv2former(model: nn.Module, sd: dict[str, torch.Tensor], where: str, fmt: str, entry: str) -> LoadReport:
    """Conv2Former weights onto Conv2Former rows (models/conv2former_weights.py); either side of another family is
    refused in one line naming both."""
    rows, c2f_weights = conv2former_rows(model), is_conv2former_state(sd)
    if rows and c2f_weights:
        report = LoadReport(source=where, format="Conv2Former official", entry=entry)
        report.loaded, report.skipped, report.missing = load_conv2former(rows, sd, where)
        return report
    if c2f_weights:
        have = str(shape_of_state(sd))
    else:
        try:
            have = _size_name(*describe_canonical(to_canonical(sd, where, fmt)[0]))
        except UserError:  # neither family: say what the Conv2Former model needs
            raise UserError(
                f"{where} holds no Conv2Former weights (first keys: {list(sd)[:3]}) — pass an official Conv2Former "
                f"checkpoint (downsample_layers.*, stages.*.attn.*)"
            ) from None
    want = str(shape_of_rows(rows)) if rows else _size_name(*_model_desc(_stages_of(model)))
    todo = shape_of_state(sd).yaml_hint() if c2f_weights else "use the ConvNeXt yaml of the weights' size"
    raise UserError(f"{where} holds {have} weights but the model backbone is {want} — {todo}")


def load_backbone_weights(
    model: nn.Module, source: Any, sha256: str | None = None, ema: bool | None = None
) -> LoadReport:
    """Copy ImageNet ConvNeXt or Conv2Former weights onto the model's backbone; returns a LoadReport, logs one line.

    source: file path, state dict, or official ConvNeXt name (e.g. 'convnext_tiny_1k', downloaded into the torch hub
    cache, torch.hub.get_dir()/checkpoints; Conv2Former files have no names: a path only). sha256: the file's expected
    SHA-256, checked on files and downloads. ema: for a training file holding weights and their EMA (timm's
    state_dict / state_dict_ema, ConvNeXt's model / model_ema): None takes the EMA, True requires it, False takes
    the other. A classifier checkpoint of ours (classify/train.py) gives its backbone rows to a detector of the same
    family and size (models.classifier.load_backbone_rows). Refuses (UserError, model untouched) unreadable files,
    unknown key formats, detection checkpoints and family / size / version / kernel mismatches.
    """
    check_source_is_file(source, model)
    w = read_weights(source, normalise_sha256(sha256, "--backbone-sha256"), ema)
    if w.record is None:
        return load_backbone_state(model, w)
    if w.record["yaml"].get("task") != "classify":
        raise UserError(
            f"{w.where} is a detection checkpoint of this project, not backbone weights — pass it to --weights "
            f"(weights transfer by name and shape)"
        )
    report = LoadReport(source=w.where, format="classifier checkpoint", entry=w.entry)
    report.loaded, report.skipped, report.missing = load_backbone_rows(model, w.record, w.where)
    return _log(report)


def load_backbone_state(model: nn.Module, w: Weights) -> LoadReport:
    """Copy the ImageNet ConvNeXt or Conv2Former state dict read by read_weights onto the model's backbone stages
    (load_backbone_weights' checks); returns the LoadReport, logged."""
    sd, where, fmt, entry = w.state, w.where, w.fmt, w.entry
    if conv2former_rows(model) or is_conv2former_state(sd):
        return _log(_load_conv2former(model, sd, where, fmt, entry))
    canon, skipped, fmt = to_canonical(sd, where, fmt)
    stages = _stages_of(model)
    have, want = describe_canonical(canon), _model_desc(stages)
    if have != want:
        raise UserError(
            f"{where} holds {_size_name(*have)} weights but the model backbone is {_size_name(*want)} — "
            f"use the matching model yaml or weights"
        )
    targets = _targets(stages)
    for k, v in canon.items():
        if k not in targets:
            raise UserError(f"{where}: {k} has no place in the model backbone — is the file a ConvNeXt checkpoint?")
        if targets[k][1].shape != v.shape:
            raise UserError(
                f"{where}: {k} has shape {list(v.shape)} but the model expects "
                f"{list(targets[k][1].shape)} — weights and model yaml are different ConvNeXt sizes"
            )
    report = LoadReport(source=where, skipped=skipped, format=fmt, entry=entry)
    with torch.no_grad():
        for k, v in canon.items():
            name, p = targets[k]
            p.copy_(v)
            report.loaded.append(name)
    report.missing = [name for k, (name, _) in targets.items() if k not in canon]
    return _log(report)


def _log(report: LoadReport) -> LoadReport:
    LOGGER.info(str(report))
    if report.missing:
        LOGGER.warning(
            f"Backbone parameters not in {report.source} (left at init): {report.missing[:5]}"
            f"{' ...' if len(report.missing) > 5 else ''}"
        )
    return report
