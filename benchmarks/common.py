"""What several benchmarks measure the same way: one place, so that their figures are taken alike."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from utils.core.errors import UserError
from utils.core.timing import Profile


def alternating_ms(
    first: Callable[[], Any], second: Callable[[], Any], runs: int, device: torch.device | None = None
) -> tuple[float, float]:
    """Median milliseconds of each of two calls over `runs` rounds, alternating which goes first (first, second,
    second, first, ...) so that ordering effects and drifting background load hit both alike. Warm up before: every
    call here is timed. device: where the work runs (a CUDA device is synchronised around each call)."""
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(runs):
        pair = [(first, times[0]), (second, times[1])]
        for fn, out in pair if r % 2 == 0 else pair[::-1]:
            with Profile(device) as timer:
                fn()
            out.append(timer.dt)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def rotated_ms(calls: list[Callable[[], Any]], runs: int, iters: int) -> list[float]:
    """Median milliseconds per call of each of several calls: `runs` rounds, each timing every call `iters` times after
    one untimed call (the previous model's threads may still be spinning), the order rotated by one each round so
    that no call always follows the same neighbour or runs first. Warm up before: the first round counts."""
    per_round: list[list[float]] = [[] for _ in calls]
    for k in range(runs):
        order = list(range(len(calls)))
        for i in order[k % len(order) :] + order[: k % len(order)]:
            calls[i]()
            with Profile() as timer:
                for _ in range(iters):
                    calls[i]()
            per_round[i].append(1e3 * timer.dt / iters)
    return [statistics.median(t) for t in per_round]


def check_trained_weights(weights: str | None) -> Path:
    """--weights of a benchmark that measures a trained checkpoint: the file, or a UserError saying how to make one."""
    if not weights or not Path(weights).is_file():
        raise UserError(
            f"--weights {weights}: no such checkpoint — train one first (python train.py --name quick writes "
            f"runs/train/quick/weights/best.pt) and pass it"
        )
    return Path(weights)


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what the platform module knows: part of every
    speed figure's context."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
