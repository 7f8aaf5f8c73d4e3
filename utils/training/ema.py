"""Model exponential moving average (YOLOv5 ModelEMA): smoother weights for validation and the saved model."""

from __future__ import annotations

import math
from collections.abc import Iterable
from copy import deepcopy

import torch
import torch.nn as nn

from utils.core.parallel import unwrap


class ModelEMA:
    """Keeps `ema`, a moving average of a model's floating-point state (parameters and buffers).

    The decay ramps up as d = decay * (1 - exp(-updates / tau)), so early updates follow the model closely.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = deepcopy(unwrap(model)).eval().float()
        self.updates = int(updates)
        self.decay_max, self.tau = float(decay), float(tau)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates: int) -> float:
        """The EMA weight of the old average after `updates` updates."""
        return self.decay_max * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the model's current state; integer buffers (BN step counters) are left alone.

        ema = d * ema + (1 - d) * model as one batched `torch._foreach_lerp_` over every float tensor (a few
        kernel launches instead of two per tensor: ~350 tensors for yolov5s, 2-4x faster than YOLOv5's per-tensor loop,
        which benchmarks/reference.py keeps as the reference)."""
        self.updates += 1
        d = self.decay(self.updates)
        ema, cur = self._float_pairs(unwrap(model))
        if ema:
            torch._foreach_lerp_(ema, cur, 1.0 - d)

    def _float_pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(EMA tensors, model tensors in the EMA's dtype) for every floating-point state entry, in one order."""
        msd = model.state_dict()
        ema, cur = [], []
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                ema.append(v)
                m = msd[k].detach()
                cur.append(m if m.dtype == v.dtype and m.device == v.device else m.to(v))
        return ema, cur

    def update_attr(
        self, model: nn.Module, include: Iterable[str] = (), exclude: Iterable[str] = ("process_group", "reducer")
    ) -> None:
        """Copy plain attributes (e.g. names, nc, hyp, yaml, stride) from the model onto the EMA model."""
        include, exclude = set(include), set(exclude)
        for k, v in unwrap(model).__dict__.items():
            if (include and k not in include) or k.startswith("_") or k in exclude:
                continue
            setattr(self.ema, k, v)
