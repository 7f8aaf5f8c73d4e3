"""train.py --compile: the training forward through torch.compile, falling back to eager with one warning.

torch.compile is lazy: a missing C++ compiler, an unsupported platform or an op the compiler cannot trace shows up
only at the first call, as an exception from inside dynamo/inductor. The first compiled call is therefore guarded:
if it fails, the eager module runs that batch and every later one, after one warning. Later failures are real
errors and propagate (the compiled graph already ran once, so they are not "compile unavailable").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from utils.core.errors import first_line
from utils.core.log import LOGGER


class CompiledForward:
    """Calls `torch.compile(module)` when enabled, else `module`; `.module` is the eager module (for state dicts,
    EMA and checkpoints, which must never see the compiled wrapper)."""

    def __init__(self, module: nn.Module, enabled: bool) -> None:
        self.module = module
        self.compiled: Callable[..., Any] | None = None
        self.proven = False  # the compiled forward has run once
        if enabled:
            try:
                self.compiled = torch.compile(module)
            except Exception as e:  # e.g. torch.compile missing or refused on this Python/platform
                self._fall_back(e)

    def _fall_back(self, e: BaseException) -> None:
        LOGGER.warning(
            f"WARNING ⚠️ --compile: torch.compile is not available here ({first_line(e, 160)}); "
            f"training continues in eager mode"
        )
        self.compiled = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        if self.proven:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as e:  # the first call is where compilation happens
            self._fall_back(e)
            return self.module(*args, **kwargs)
        self.proven = True
        return out

    @property
    def active(self) -> bool:
        """True while the compiled forward is in use."""
        return self.compiled is not None
