"""ConvNeXt size table, yaml `convnext:` spec resolution and the layer-id rule for layer-wise LR decay.

The size table is the single source of truth for every ConvNeXt size (V1 and V2). A model yaml names a size once
in its top-level `convnext:` key; the backbone rows only say which stage they are.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from models.common import ConvNeXt_Block
from utils.core.errors import UserError

# depths / dims per size; drop_path = the default network-wide drop-path rate when a yaml does not set one
# (ImageNet-1k values where the papers give them); official = the versions with official facebookresearch ImageNet
# weights (V1: tiny..xlarge, V2: atto..huge without small / xlarge). Every size builds in either version: the
# atto..nano V1 yamls exist for timm's V1 weights of those sizes, which are not official releases.
CONVNEXT_SIZES: dict[str, dict[str, Any]] = {
    "atto": {"depths": (2, 2, 6, 2), "dims": (40, 80, 160, 320), "drop_path": 0.0, "official": (2,)},
    "femto": {"depths": (2, 2, 6, 2), "dims": (48, 96, 192, 384), "drop_path": 0.0, "official": (2,)},
    "pico": {"depths": (2, 2, 6, 2), "dims": (64, 128, 256, 512), "drop_path": 0.0, "official": (2,)},
    "nano": {"depths": (2, 2, 8, 2), "dims": (80, 160, 320, 640), "drop_path": 0.1, "official": (2,)},
    "tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "drop_path": 0.1, "official": (1, 2)},
    "small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768), "drop_path": 0.4, "official": (1,)},
    "base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024), "drop_path": 0.5, "official": (1, 2)},
    "large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536), "drop_path": 0.5, "official": (1, 2)},
    "xlarge": {"depths": (3, 3, 27, 3), "dims": (256, 512, 1024, 2048), "drop_path": 0.5, "official": (1,)},
    "huge": {"depths": (3, 3, 27, 3), "dims": (352, 704, 1408, 2816), "drop_path": 0.5, "official": (2,)},
}
SPEC_KEYS = ("size", "version", "depths", "dims", "drop_path", "layer_scale_init")


def official_sizes(version: int) -> tuple[str, ...]:
    """Sizes with official ImageNet weights for ConvNeXt `version` (1 or 2), smallest first."""
    return tuple(size for size, s in CONVNEXT_SIZES.items() if version in s["official"])


def resolve_convnext(spec: Any, where: str = "model yaml") -> dict[str, Any]:
    """Turn a yaml `convnext:` value into {size, version, depths, dims, drop_path, layer_scale_init}.

    spec is a size name ('tiny') or a mapping with any of SPEC_KEYS; explicit depths/dims override the size's
    (custom micro backbones), and without a size both are required. Bad values raise UserError naming `where`.
    """
    if isinstance(spec, str):
        spec = {"size": spec}
    if not isinstance(spec, dict):
        raise UserError(
            f"{where}: 'convnext' must be a size name or a mapping with keys {', '.join(SPEC_KEYS)} — got {spec!r}"
        )
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} under 'convnext' — allowed: {', '.join(SPEC_KEYS)}")
    size = spec.get("size")
    if size is not None and size not in CONVNEXT_SIZES:
        raise UserError(f"{where}: unknown ConvNeXt size {size!r} — use one of {', '.join(CONVNEXT_SIZES)}")
    base = CONVNEXT_SIZES.get(size, {})
    out = {
        "size": size or "custom",
        "version": spec.get("version", 1),
        "depths": spec.get("depths", base.get("depths")),
        "dims": spec.get("dims", base.get("dims")),
        "drop_path": spec.get("drop_path", base.get("drop_path", 0.0)),
        "layer_scale_init": spec.get("layer_scale_init", 1e-6),
    }
    _check_spec(out, where)
    out["depths"], out["dims"] = [int(d) for d in out["depths"]], [int(d) for d in out["dims"]]
    return out


def _check_spec(s: dict[str, Any], where: str) -> None:
    """Validate a resolved spec; one UserError line per problem."""
    for key in ("depths", "dims"):
        v = s[key]
        if v is None:
            raise UserError(f"{where}: 'convnext' needs a size or explicit depths and dims — add e.g. 'size: tiny'")
        if not isinstance(v, (list, tuple)) or len(v) != 4 or not all(isinstance(x, int) and x > 0 for x in v):
            raise UserError(f"{where}: convnext {key} must be 4 positive integers, got {v!r}")
    if s["version"] not in (1, 2):
        raise UserError(f"{where}: convnext version must be 1 or 2, got {s['version']!r}")
    if not isinstance(s["drop_path"], (int, float)) or not 0 <= s["drop_path"] < 1:
        raise UserError(f"{where}: convnext drop_path must be a number in [0, 1), got {s['drop_path']!r}")
    if not isinstance(s["layer_scale_init"], (int, float)):
        raise UserError(f"{where}: convnext layer_scale_init must be a number, got {s['layer_scale_init']!r}")


def num_layers_for(depths: list[int] | tuple[int, ...]) -> int:
    """Layer id of the last group (downsample 3 + stage 3): 3 + (depths[2] - 1) // 3 + 1 (6 for T, 12 for S/B/L)."""
    return 3 + (depths[2] - 1) // 3 + 1


def _stage_ids(stage: ConvNeXt_Block, num_layers: int) -> dict[int, int]:
    """id(param) -> layer id for one ConvNeXt stage module (BRIEF §2 rule)."""
    ids: dict[int, int] = {}
    s = stage.stage
    for p in stage.downsample.parameters():
        ids[id(p)] = {0: 0, 1: 2, 2: 3, 3: num_layers}[s]
    for b, block in enumerate(stage.blocks):
        layer = {0: 1, 1: 2, 2: 3 + b // 3, 3: num_layers}[s]
        for p in block.parameters():
            ids[id(p)] = layer
    return ids


def layer_decay_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """For every parameter name of a Model (or a wrapped one): its ConvNeXt layer id, and num_layers.

    Backbone: stem 0, stage 0 -> 1, downsample 1 + stage 1 -> 2, stage-2 block b -> 3 + b // 3,
    downsample 2 -> 3, downsample 3 + stage 3 -> num_layers. Everything else (head, Detect) -> num_layers + 1.
    A model without ConvNeXt stages gets num_layers 0 and every parameter id 1.
    """
    stages = [m for m in model.modules() if isinstance(m, ConvNeXt_Block)]
    num_layers = num_layers_for(_depths_of(stages)) if stages else 0
    by_param: dict[int, int] = {}
    for st in stages:
        by_param.update(_stage_ids(st, num_layers))
    names = {name: by_param.get(id(p), num_layers + 1) for name, p in model.named_parameters()}
    return names, num_layers


def _depths_of(stages: list[ConvNeXt_Block]) -> list[int]:
    depths = [0, 0, 0, 0]
    for st in stages:
        depths[st.stage] = len(st.blocks)
    return depths
