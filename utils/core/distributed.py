"""DDP helpers for torchrun launches: rank info, process-group setup/teardown, flag broadcast, sample counts.

torchrun sets LOCAL_RANK, RANK and WORLD_SIZE; a plain `python train.py` has none of them (rank -1, world 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from utils.core.errors import UserError
from utils.core.log import LOGGER

# a dead rank makes the others fail after this long instead of hanging forever; it also bounds every barrier and
# collective, e.g. ranks waiting for rank 0's first dataset download / label scan: 3 h like YOLOv5 (train --ddp-timeout)
DEFAULT_TIMEOUT_S = 10800
_timeout_s = float(DEFAULT_TIMEOUT_S)  # the group's timeout, for messages


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: local_rank / rank are -1 outside torchrun."""

    local_rank: int = -1
    rank: int = -1
    world_size: int = 1

    @property
    def main(self) -> bool:
        """True on the process that validates, logs and saves (rank 0, or the only process)."""
        return self.rank in (-1, 0)

    @property
    def ddp(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Ranks from the environment torchrun provides."""
    return DistInfo(int(os.getenv("LOCAL_RANK", -1)), int(os.getenv("RANK", -1)), int(os.getenv("WORLD_SIZE", 1)))


def check_batch_size(batch_size: int, world_size: int) -> int:
    """Per-process batch size; the total --batch-size must split evenly between the processes."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be >= 1")
    if batch_size % world_size:
        raise UserError(
            f"--batch-size {batch_size} is not a multiple of the world size {world_size} (torchrun "
            f"processes) — use a multiple of {world_size}, e.g. {world_size * max(batch_size // world_size, 1)}"
        )
    return batch_size // world_size


def init_distributed(info: DistInfo, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the torchrun process group: NCCL for CUDA, gloo for CPU, with a timeout so a dead rank cannot hang us."""
    if not info.ddp or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise UserError("torch.distributed is not available in this PyTorch build — run without torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    global _timeout_s
    _timeout_s = float(timeout_s)
    # the group's timeout bounds init, every barrier and every collective (gloo and NCCL alike)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    LOGGER.info(f"DDP: {backend} process group, world size {info.world_size}, timeout {timeout_s:.0f}s")


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was started)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks (no-op outside DDP); waiting past the group's timeout is one clear line."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError as e:  # DistBackendError is a RuntimeError; only a timeout is the user's to fix
            if "timed out" not in str(e).lower() and "timeout" not in str(e).lower():
                raise
            raise UserError(
                f"DDP: rank {dist.get_rank()} waited longer than {_timeout_s:.0f}s for the other ranks "
                f"(a rank died, or rank 0's dataset download / label scan is slow) — check the other "
                f"ranks' output, or raise --ddp-timeout"
            ) from None


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank src's flag on every rank (e.g. early stop decided by rank 0 after validation)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    obj = [flag]
    dist.broadcast_object_list(obj, src=src)
    return bool(obj[0])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank src's picklable object on every rank (e.g. the run folder rank 0 chose)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag is set on any rank (e.g. a non-finite loss), so all ranks stop together."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_counts(n: int) -> list[int]:
    """Every rank's count (e.g. images seen this epoch), in rank order; [n] outside DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        return [int(n)]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, int(n))
    return [int(x) for x in out]
