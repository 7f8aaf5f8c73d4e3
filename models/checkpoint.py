"""Checkpoints: plain-data records (loadable with torch.load(weights_only=True)), written atomically.

A checkpoint never pickles Python classes: the model is stored as its yaml dict + state dict, so a file can be
loaded safely and survives refactors of the code that built it. ultralytics/yolov5 checkpoints (which do pickle
classes) are converted on load by models/yolov5_ckpt.py, without running anything from the file.
"""

from __future__ import annotations

import os
import pickle
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.classifier import ClassificationModel
from models.yolo import Model
from models.yolov5_ckpt import is_torch_zip, load_yolov5
from utils.core.errors import UserError, first_line
from utils.core.files import atomic_link, atomic_write, user_writes
from utils.core.log import LOGGER
from utils.core.names import names_dict
from utils.core.parallel import unwrap

CHECKPOINT_VERSION = 1
_RECORD_KEYS = ("yaml", "state_dict", "nc")


def model_record(model: nn.Module, half: bool = False) -> dict[str, Any]:
    """A plain-data description of a Model: yaml dict, CPU state dict (fp16 floats if half), nc, names, stride."""
    m = unwrap(model)
    state = {}
    for k, v in m.state_dict().items():
        v = v.detach().cpu().clone(memory_format=torch.contiguous_format)  # the same file whatever the training layout
        state[k] = v.half() if half and v.is_floating_point() else v
    names = names_dict(getattr(m, "names", None)) or {i: str(i) for i in range(m.nc)}
    return {
        "yaml": deepcopy(m.yaml),
        "state_dict": state,
        "nc": int(m.nc),
        "names": names,
        "stride": [float(s) for s in m.stride],
    }


def model_from_record(rec: dict[str, Any]) -> Model | ClassificationModel:
    """Rebuild a float32 Model from model_record() output (a ClassificationModel when the yaml says task: classify)."""
    build = ClassificationModel if rec["yaml"].get("task") == "classify" else Model
    model = build(deepcopy(rec["yaml"]), nc=rec["nc"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in rec["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    model.names = names_dict(rec.get("names")) or {i: str(i) for i in range(rec["nc"])}
    return model


def checkpoint_record(ckpt: Any, where: str, ema: bool | None = None) -> dict[str, Any] | None:
    """The model record of a loaded checkpoint of this project (its EMA unless ema is False; ema True requires one),
    or None when ckpt is anything else (an ImageNet state dict, a timm training file)."""
    rec = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(rec, dict) or not all(k in rec for k in _RECORD_KEYS):
        return None
    if ema is True and not ckpt.get("ema"):
        raise UserError(f"{where} holds no EMA weights (its 'ema' entry is empty) — drop ema=True / --backbone-ema")
    return rec if ema is False or not ckpt.get("ema") else ckpt["ema"]


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write ckpt to path atomically: a crash mid-write leaves the previous file intact. A full disk or a
    read-only folder is a one-line UserError naming path (the temp file is removed, the old file kept)."""
    path = Path(path)
    with user_writes(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: _torch_save(ckpt, f, path), fsync=True)


def save_last_and_best(ckpt: dict[str, Any], last: str | Path, best: str | Path | None = None) -> None:
    """Write last.pt atomically and, when best is given (the epoch improved), make best.pt the same file by a hard
    link (atomic_link): one write instead of two, ~0.5 s and 450 MB less per improving epoch for ConvNeXt-T with
    its optimizer state. The names part when the next epoch replaces last.pt, or when strip_optimizer rewrites one."""
    save_checkpoint(ckpt, last)
    if best is not None:
        with user_writes(Path(best).parent):
            atomic_link(last, best)


_MIN_FREE_BYTES = 1 << 20  # less than this left after a failed write: the disk was full


def _torch_save(ckpt: dict[str, Any], f: Any, path: Path) -> None:
    """torch.save to an open file; its zip writer reports a failed write as a RuntimeError ("inline_container.cc
    ... unexpected pos" / "file write failed") rather than OSError: tell the user which disk problem it was."""
    try:
        torch.save(ckpt, f)
    except RuntimeError as e:
        msg = str(e)
        if "inline_container" not in msg and "write failed" not in msg:
            raise  # not a write failure: a bug
        try:
            st = os.statvfs(path.parent)
            full = st.f_bavail * st.f_frsize < _MIN_FREE_BYTES
        except OSError:
            full = False
        cause = "no space left on device" if full else f"write failed ({first_line(e, 80)})"
        raise UserError(
            f"cannot write {path}: {cause} — free some disk space (the previous {path.name}, if any, is kept)"
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by this project, or convert an ultralytics/yolov5 one in memory (finished: epoch
    -1, no optimizer); clear UserError for a missing, foreign or unsafe file.

    Our files load with weights_only=True. Only when that refuses a global (a yolov5 file pickles whole modules) is
    the file read again, by models.yolov5_ckpt's restricted unpickler, which runs nothing from the file either."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"weights file not found: {path} — check the path (trained weights are in runs/train/*/weights/)"
        )
    foreign = False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        # weights_only refused a global of a zip file: maybe yolov5's pickled modules (refused there if not)
        foreign = isinstance(e, pickle.UnpicklingError) and is_torch_zip(path)
        if not foreign:
            raise UserError(
                f"{path} is not a readable checkpoint of this project ({first_line(e)}) — "
                f"pass a .pt written by train.py"
            ) from None
    if foreign:
        return _from_yolov5(path)
    rec = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(rec, dict) or not all(k in rec for k in _RECORD_KEYS):
        raise UserError(
            f"{path} is not a checkpoint of this project (no model record) — pass a .pt written by "
            f"train.py; ImageNet backbone weights go to train.py --backbone-weights"
        )
    return ckpt


def _from_yolov5(path: Path) -> dict[str, Any]:
    """An ultralytics/yolov5 checkpoint as our layout (docs/architecture.md): its EMA (else model) weights as the
    model record of a finished run. Nothing to resume: its optimizer and settings are yolov5's, not ours."""
    imported = load_yolov5(path)
    LOGGER.info(f"converted from ultralytics/yolov5 checkpoint {path} ({imported.which} weights)")
    return {
        "epoch": -1,
        "best_fitness": imported.best_fitness,
        "model": model_record(imported.model),
        "ema": None,
        "updates": 0,
        "optimizer": None,
        "scaler": None,
        "opt": {},
        "hyp": {},
        "date": imported.date,
        "version": CHECKPOINT_VERSION,
    }


def load_checkpoint_model(weights: str | Path, device: str | torch.device = "cpu", fuse: bool = False) -> nn.Module:
    """A ready-to-run Model (EMA weights when present, float32, eval mode) from a checkpoint file."""
    ckpt = load_checkpoint(weights)
    model = model_from_record(ckpt.get("ema") or ckpt["model"]).to(device).eval()
    if fuse and hasattr(model, "fuse"):
        model = model.fuse()
    return model


def strip_optimizer(path: str | Path, out: str | Path | None = None) -> float:
    """Reduce a finished checkpoint to EMA (or model) weights in fp16 for deployment; returns the new size in MB.

    Optimizer, scaler and the separate EMA are dropped, and epoch is set to -1 so --resume knows the run finished.
    """
    ckpt = load_checkpoint(path)
    record = ckpt.get("ema") or ckpt["model"]
    record["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    ckpt.update(model=record, ema=None, optimizer=None, scaler=None, updates=None, epoch=-1)
    out = Path(out or path)
    save_checkpoint(ckpt, out)
    mb = out.stat().st_size / 1e6
    LOGGER.info(f"Optimizer stripped from {path}{f', saved as {out}' if out != Path(path) else ''}, {mb:.1f}MB")
    return mb


def new_checkpoint(
    epoch: int,
    best_fitness: float,
    model: nn.Module,
    ema: nn.Module | None,
    updates: int,
    optimizer: torch.optim.Optimizer | None,
    scaler: Any,
    opt: dict,
    hyp: dict,
) -> dict[str, Any]:
    """Assemble a training checkpoint in the documented layout (docs/architecture.md)."""
    return {
        "epoch": epoch,
        "best_fitness": float(best_fitness),
        "model": model_record(model),
        "ema": model_record(ema) if ema is not None else None,
        "updates": int(updates),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "opt": {k: str(v) if isinstance(v, Path) else v for k, v in opt.items()},
        "hyp": dict(hyp),
        "date": datetime.now().isoformat(),
        "version": CHECKPOINT_VERSION,
    }


def trained_imgsz(weights: str | Path) -> int | None:
    """The image size a checkpoint of ours was trained at (its opt["imgsz"]), or None (another file, or not ours).
    mmap: only the small opt dict is read, not the tensors; the caller's loader checks the file itself."""
    if Path(weights).suffix != ".pt" or not Path(weights).is_file():
        return None
    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours (a converted yolov5 file, a broken one): the model loader reports what it is
        return None
    opt = ckpt.get("opt") if isinstance(ckpt, dict) else None
    size = opt.get("imgsz") if isinstance(opt, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
