"""Device selection: --device cpu | 0 | 0,1 | '' (first GPU if any)."""
from __future__ import annotations

import os

import torch

from utils.errors import UserError
from utils.log import LOGGER


def select_device(device: str | int | torch.device = "", batch_size: int = 0, verbose: bool = True) -> torch.device:
    """Resolve a YOLOv5-style device string to a torch.device.

    Under torchrun the process uses cuda:LOCAL_RANK. A requested GPU that does not exist is a UserError.
    For several GPUs the batch size must divide evenly between them.
    """
    if isinstance(device, torch.device):
        return device
    spec = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    if spec in ("cpu", "mps"):
        chosen = torch.device(spec)
    else:
        if spec and not torch.cuda.is_available():
            raise UserError(f"--device {device} requested but CUDA is not available — use --device cpu")
        if not torch.cuda.is_available():
            chosen = torch.device("cpu")
        else:
            ids = [int(x) for x in spec.split(",") if x != ""] or [0]
            n = torch.cuda.device_count()
            bad = [i for i in ids if i >= n]
            if bad:
                raise UserError(f"--device {device}: GPU {bad[0]} not found ({n} visible) — pick from 0..{n - 1}")
            if len(ids) > 1 and batch_size > 0 and batch_size % len(ids):
                raise UserError(f"--batch-size {batch_size} is not a multiple of the GPU count {len(ids)}")
            local_rank = int(os.getenv("LOCAL_RANK", -1))
            chosen = torch.device("cuda", local_rank if local_rank >= 0 else ids[0])
    if verbose and int(os.getenv("RANK", -1)) in (-1, 0):
        name = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else "CPU"
        LOGGER.info(f"torch {torch.__version__} device {chosen} ({name})")
    return chosen
