"""CPU training: let glibc's malloc keep freed tensor memory for the next step instead of returning it to the kernel.

By default glibc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh mmap() and
hands the heap top back above its trim threshold, so the activations and gradients a CPU training step frees are
page-faulted and zeroed by the kernel again on the next step. On the 2-core machine that was ~1 M minor page faults
and 2.3 s of system time per 10 yolov5s steps; with the thresholds raised once, 0.33 M and 0.9 s, and the step took
0.76x the time (docs/benchmarks.md, "Training step options"). The memory kept is the step's own peak, which the next
step needs again. Users who chose their own allocator settings (MALLOC_* or GLIBC_TUNABLES variables, a preloaded
jemalloc / tcmalloc) keep them.
"""

from __future__ import annotations

import ctypes
import os
import sys

from utils.core.log import LOGGER

# mallopt() parameters from <malloc.h>; values are C ints, so they stay below 2 GiB
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))
# glibc's environment variable for each parameter: the same settings for a process started from outside
ENV_NAMES = {
    M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_",
    M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
    M_TOP_PAD: "MALLOC_TOP_PAD_",
}
USER_SETTINGS = (*ENV_NAMES.values(), "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")

_applied = False


def _glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc (musl, macOS and Windows have no mallopt thresholds)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 — only glibc has it
        return libc if hasattr(libc, "mallopt") else None
    except (OSError, AttributeError):
        return None


def user_chose_allocator(environ: dict[str, str] | None = None) -> bool:
    """True when the environment already configures malloc (its variables, or an LD_PRELOADed allocator)."""
    env = os.environ if environ is None else environ
    preload = env.get("LD_PRELOAD", "")
    return any(k in env for k in USER_SETTINGS) or "malloc" in preload  # libjemalloc, libtcmalloc, ...


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True if they are raised now or were before.
    False, changing nothing, off glibc or when the user configured the allocator."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None or user_chose_allocator():
        return False
    _applied = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
    return _applied


def keep_freed_memory_for_training(device_type: str) -> None:
    """What both trainers call before their first step: keep_freed_memory() on a CPU, with one log line saying so.
    (On CUDA the steps' tensors live in PyTorch's caching allocator, so there is nothing to change.)"""
    if device_type == "cpu" and keep_freed_memory():
        LOGGER.info("host memory: freed tensor memory stays in the process for the next step (utils/core/host_memory)")


def as_environment() -> dict[str, str]:
    """SETTINGS as glibc's variables, for a process this one starts (benchmarks/vs_yolov5.py --yolov5-malloc)."""
    return {ENV_NAMES[param]: str(value) for param, value in SETTINGS}
