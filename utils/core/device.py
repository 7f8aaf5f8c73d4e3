"""Device selection: --device cpu | 0 | 0,1 | '' (first GPU if any)."""

from __future__ import annotations

import os
import re

import torch

from utils.core.errors import UserError
from utils.core.log import LOGGER

ACCEPTED = "'' (auto: first GPU, else CPU), cpu, or CUDA indices like 0 or 0,1,2,3"


def check_device(device: str | int | torch.device = "") -> str:
    """Validate a YOLOv5-style device string without touching a GPU: '' | 'cpu' | '0' | '0,1' (also 'cuda', 'cuda:1').

    Returns the normalised spec ('', 'cpu' or comma-separated indices). Anything else (mps, tpu, '0,x'), a GPU
    index on a machine without CUDA, or an index that is not visible is a one-line UserError saying what is accepted.
    """
    if isinstance(device, torch.device):
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"--device {device}: only CPU and CUDA devices are supported — use {ACCEPTED}")
        device = "cpu" if device.type == "cpu" else str(device.index or 0)
    raw = str(device)
    spec = raw.strip().lower().replace(" ", "")
    spec = {"cuda": "0"}.get(spec, spec.replace("cuda:", ""))
    if spec in ("", "cpu"):
        return spec
    if not re.fullmatch(r"\d+(,\d+)*", spec):
        raise UserError(f"--device {raw!r}: not a device this code base runs on — use {ACCEPTED}")
    ids = [int(x) for x in spec.split(",")]
    if len(set(ids)) != len(ids):
        raise UserError(f"--device {raw}: a GPU is listed twice — list each index once, e.g. --device 0,1")
    if not torch.cuda.is_available():
        raise UserError(
            f"--device {raw} requested but CUDA is not available on this machine — use --device cpu (or '' for auto)"
        )
    n = torch.cuda.device_count()
    bad = [i for i in ids if i >= n]
    if bad:
        raise UserError(f"--device {raw}: GPU {bad[0]} not found ({n} visible) — pick from 0..{n - 1}")
    return spec


def select_device(device: str | int | torch.device = "", batch_size: int = 0, verbose: bool = True) -> torch.device:
    """Resolve a YOLOv5-style device string (checked by check_device first) to a torch.device.

    Under torchrun the process uses cuda:LOCAL_RANK. For several GPUs the batch size must divide evenly between them.
    """
    if isinstance(device, torch.device) and device.type in ("cpu", "cuda"):
        return device
    spec = check_device(device)
    if spec == "cpu" or (spec == "" and not torch.cuda.is_available()):
        chosen = torch.device("cpu")
    else:
        ids = [int(x) for x in spec.split(",")] if spec else [0]
        if len(ids) > 1 and batch_size > 0 and batch_size % len(ids):
            raise UserError(f"--batch-size {batch_size} is not a multiple of the GPU count {len(ids)}")
        local_rank = int(os.getenv("LOCAL_RANK", -1))
        chosen = torch.device("cuda", local_rank if local_rank >= 0 else ids[0])
    if verbose and int(os.getenv("RANK", -1)) in (-1, 0):
        name = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else "CPU"
        LOGGER.info(f"torch {torch.__version__} device {chosen} ({name})")
    return chosen
