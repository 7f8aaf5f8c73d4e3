"""Optimizer parameter groups (incl. ConvNeXt layer-wise LR decay), LR schedule lambdas and layer freezing."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from models.common import GRN, LayerNorm
from models.sizes import layer_decay_ids
from utils.core.errors import UserError
from utils.core.log import LOGGER, colorstr
from utils.core.parallel import unwrap

OPTIMIZERS = ("SGD", "Adam", "AdamW")
GROUP_NAMES = ("bias", "decay", "no_decay")  # order inside each LR-scale set (YOLOv5 puts biases first)
LAYER_SCALES = ("gamma", "layer_scale_1", "layer_scale_2")  # ConvNeXt γ, Conv2Former's two layer scales: no decay
NBS = 64  # YOLOv5's nominal batch size: gradients are accumulated up to it and weight decay is scaled to it


def nominal_batch(hyp: dict) -> int:
    """The batch gradients are accumulated up to: hyp `nbs` when given (tiny datasets), else YOLOv5's 64."""
    return max(int(hyp.get("nbs", NBS)), 1)


def accumulate_steps(hyp: dict, total_batch_size: int) -> int:
    """Batches per optimizer step after warmup: round(nbs / batch), at least 1."""
    return max(round(nominal_batch(hyp) / total_batch_size), 1)


def _no_decay_module(m: nn.Module) -> bool:
    """Norm layers (BatchNorm, LayerNorm incl. our channels-first one, GroupNorm) and GRN: weights never decay."""
    return isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, LayerNorm, GRN))


def param_kinds(model: nn.Module) -> dict[str, str]:
    """Parameter name -> 'bias' / 'no_decay' / 'decay' (every parameter once, frozen ones included)."""
    kinds: dict[str, str] = {}
    seen: set[int] = set()
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:  # shared parameters belong to the first module that holds them
                continue
            seen.add(id(p))
            full = f"{mname}.{pname}" if mname else pname
            if pname == "bias":
                kinds[full] = "bias"
            elif _no_decay_module(m) or pname in LAYER_SCALES:  # layer scales are per-channel gains
                kinds[full] = "no_decay"
            else:
                kinds[full] = "decay"
    return kinds


def _lr_scales(model: nn.Module, names: list[str], layer_decay: float | None) -> dict[str, float]:
    """Parameter name -> LR scale: layer_decay ** (num_layers + 1 - layer_id), or 1.0 without layer decay."""
    if not layer_decay:
        return dict.fromkeys(names, 1.0)
    if not 0 < layer_decay <= 1:
        raise UserError(f"--layer-decay {layer_decay} must be in (0, 1] — the ConvNeXt recipe uses 0.7–0.95")
    ids, num_layers = layer_decay_ids(model)
    return {n: float(layer_decay ** (num_layers + 1 - ids[n])) for n in names}


def step_implementation(params: list[torch.Tensor]) -> dict[str, bool]:
    """The optimizer kernel to use: `fused` (one kernel per parameter group) when every parameter is on CUDA,
    `foreach` (batched tensor lists) otherwise. PyTorch's own default on CPU is the per-tensor Python loop;
    all three give the same update (tests/test_optim.py), they differ only in speed (docs/benchmarks.md)."""
    if params and all(p.device.type == "cuda" for p in params):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(
    model: nn.Module,
    name: str = "SGD",
    lr: float = 0.001,
    momentum: float = 0.9,
    decay: float = 1e-5,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """SGD (nesterov) / Adam / AdamW over bias, decay and no-decay groups, one set per layer-decay LR scale.

    Each group carries `name`, `lr_scale` and `lr = lr * lr_scale`; the scale-1.0 set (the head) comes first so
    results.csv lr0-lr2 show the head's LRs. Frozen parameters are included: --freeze-epochs may unfreeze them.
    """
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer {name!r} is not supported — use one of {', '.join(OPTIMIZERS)}")
    model = unwrap(model)
    kinds = param_kinds(model)
    params = dict(model.named_parameters())
    scales = _lr_scales(model, list(kinds), layer_decay)
    groups = []
    for scale in sorted(set(scales.values()), reverse=True):
        for kind in GROUP_NAMES:
            ps = [params[n] for n, k in kinds.items() if k == kind and scales[n] == scale]
            if ps:  # empty groups would only clutter the optimizer state
                groups.append(
                    {
                        "params": ps,
                        "name": kind,
                        "lr_scale": scale,
                        "lr": lr * scale,
                        "weight_decay": decay if kind == "decay" else 0.0,
                    }
                )
    impl = step_implementation(list(params.values()))
    if name == "SGD":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **impl)
    elif name == "Adam":
        optimizer = torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999), **impl)
    else:  # AdamW: weight_decay is decoupled from the gradient
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **impl)
    n = {k: sum(len(g["params"]) for g in groups if g["name"] == k) for k in GROUP_NAMES}
    n_scales = len({g["lr_scale"] for g in groups})
    extra = f", layer decay {layer_decay} over {n_scales} LR scales" if layer_decay else ""
    LOGGER.info(
        f"{colorstr('optimizer:')} {name}(lr={lr}) with parameter groups {n['no_decay']} weight(decay=0.0), "
        f"{n['decay']} weight(decay={decay}), {n['bias']} bias{extra}"
    )
    return optimizer


def lr_lambda(epochs: int, lrf: float, cos: bool = False) -> Callable[[int], float]:
    """LR multiplier per epoch: linear (1 - x/E)(1 - lrf) + lrf, or cosine one-cycle 1 -> lrf."""
    if cos:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def _set_rows_grad(model: nn.Module, rows: list[int], flag: bool) -> int:
    """requires_grad = flag for every parameter of model rows `rows`; returns how many tensors changed."""
    prefixes = tuple(f"model.{int(i)}." for i in rows)
    n = 0
    for name, p in unwrap(model).named_parameters():
        if prefixes and name.startswith(prefixes):
            p.requires_grad = flag
            n += 1
    return n


def freeze_layers(model: nn.Module, rows: list[int]) -> None:
    """Freeze (requires_grad False) the parameters of the given model rows."""
    n = _set_rows_grad(model, rows, False)
    if rows:
        LOGGER.info(f"freezing model rows {sorted(int(i) for i in rows)} ({n} parameter tensors)")


def unfreeze_layers(model: nn.Module, rows: list[int]) -> None:
    """Unfreeze (requires_grad True) the parameters of the given model rows."""
    n = _set_rows_grad(model, rows, True)
    if rows:
        LOGGER.info(f"unfreezing model rows {sorted(int(i) for i in rows)} ({n} parameter tensors)")


def backbone_indices(model: nn.Module) -> list[int]:
    """Row indices of the backbone (0 .. backbone_rows - 1)."""
    return list(range(int(unwrap(model).backbone_rows)))
