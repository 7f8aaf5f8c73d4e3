"""The bare model inside a DataParallel / DistributedDataParallel wrapper. A leaf: imports nothing of ours, so any
layer (models, training, inference) may use it."""

from __future__ import annotations

import torch.nn as nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DP/DDP wrapper, or the model itself.

    Duck-typed on `.module` so that any wrapper of that shape works (our Model has no `module` attribute)."""
    return model.module if hasattr(model, "module") else model
