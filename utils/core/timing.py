"""The one timer: `Profile`, a context manager that adds each `with` block's wall time to a running total.

CUDA kernels run asynchronously: without a synchronisation a block would measure only the launches and the next
block would pay for them. So on a CUDA device the timer waits for the device on entry and on exit.
"""

from __future__ import annotations

import time

import torch


class Profile:
    """`with p:` adds the block's seconds to `p.t` (the total) and sets `p.dt` (the last block).

    device: where the timed work runs; a CUDA device (or "cuda:0") is synchronised around the block, anything else
    (None, the CPU) only reads the clock.
    """

    def __init__(self, device: torch.device | str | None = None, t: float = 0.0):
        self.device = torch.device(device) if device is not None else None
        self.cuda = self.device is not None and self.device.type == "cuda"
        self.t = t
        self.dt = 0.0
        self._start = 0.0

    def __enter__(self) -> Profile:
        self._start = self.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.dt = self.time() - self._start
        self.t += self.dt

    def time(self) -> float:
        """perf_counter() once the device has finished the work queued so far."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
