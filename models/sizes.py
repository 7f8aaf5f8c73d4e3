"""ConvNeXt and Conv2Former size tables, yaml `convnext:` / `conv2former:` spec resolution and the layer-id rule for
layer-wise LR decay.

The size tables are the single source of truth for every ConvNeXt size (V1 and V2) and every Conv2Former size. A model
yaml names a size once in its top-level `convnext:` or `conv2former:` key; the backbone rows only say which stage they
are.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from models.common import Conv2Former_Block, ConvNeXt_Block
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

# Conv2Former (BRIEF §5): kernel = the modulation's depthwise kernel. n's kernel was 11 in the first code release and
# is 7 in the current one (7 here); b_22k is the ImageNet-22k-pretrained b, which uses kernel 7. drop_path = the
# detection default when a yaml sets none (the rates of our ConvNeXt yamls of the matching size).
CONV2FORMER_SIZES: dict[str, dict[str, Any]] = {
    "n": {"kernel_size": 7, "depths": (2, 2, 8, 2), "dims": (64, 128, 256, 512), "drop_path": 0.1},
    "t": {"kernel_size": 11, "depths": (3, 3, 12, 3), "dims": (72, 144, 288, 576), "drop_path": 0.1},
    "s": {"kernel_size": 11, "depths": (4, 4, 32, 4), "dims": (72, 144, 288, 576), "drop_path": 0.2},
    "b": {"kernel_size": 11, "depths": (4, 4, 34, 4), "dims": (96, 192, 384, 768), "drop_path": 0.3},
    "b_22k": {"kernel_size": 7, "depths": (4, 4, 34, 4), "dims": (96, 192, 384, 768), "drop_path": 0.3},
    "l": {"kernel_size": 11, "depths": (4, 4, 48, 4), "dims": (128, 256, 512, 1024), "drop_path": 0.4},
}
CONV2FORMER_KEYS = ("size", "kernel_size", "depths", "dims", "drop_path", "layer_scale_init")
CONV2FORMER_MLP_RATIO = 4  # the same in every official size
STAGE_MODULES = (ConvNeXt_Block, Conv2Former_Block)  # backbone stage rows: .stage, .downsample, .blocks


def official_sizes(version: int) -> tuple[str, ...]:
    """Sizes with official ImageNet weights for ConvNeXt `version` (1 or 2), smallest first."""
    return tuple(size for size, s in CONVNEXT_SIZES.items() if version in s["official"])


def resolve_convnext(spec: Any, where: str = "model yaml") -> dict[str, Any]:
    """Turn a yaml `convnext:` value into {size, version, depths, dims, drop_path, layer_scale_init}.

    spec is a size name ('tiny') or a mapping with any of SPEC_KEYS; explicit depths/dims override the size's
    (custom micro backbones), and without a size both are required. Bad values raise UserError naming `where`.
    """
    spec, base = _spec_and_base(spec, where, "convnext", "ConvNeXt", SPEC_KEYS, CONVNEXT_SIZES)
    out = {
        "size": spec.get("size") or "custom",
        "version": spec.get("version", 1),
        "depths": spec.get("depths", base.get("depths")),
        "dims": spec.get("dims", base.get("dims")),
        "drop_path": spec.get("drop_path", base.get("drop_path", 0.0)),
        "layer_scale_init": spec.get("layer_scale_init", 1e-6),
    }
    _check_common(out, where, "convnext", "tiny")
    if out["version"] not in (1, 2):
        raise UserError(f"{where}: convnext version must be 1 or 2, got {out['version']!r}")
    out["depths"], out["dims"] = [int(d) for d in out["depths"]], [int(d) for d in out["dims"]]
    return out


def resolve_conv2former(spec: Any, where: str = "model yaml") -> dict[str, Any]:
    """Turn a yaml `conv2former:` value into {size, kernel_size, depths, dims, drop_path, layer_scale_init, mlp_ratio}.

    Same rules as resolve_convnext: a size name ('t') or a mapping with any of CONV2FORMER_KEYS; explicit kernel_size /
    depths / dims override the size's, and without a size depths and dims are required (kernel_size defaults to 7).
    """
    spec, base = _spec_and_base(spec, where, "conv2former", "Conv2Former", CONV2FORMER_KEYS, CONV2FORMER_SIZES)
    out = {
        "size": spec.get("size") or "custom",
        "kernel_size": spec.get("kernel_size", base.get("kernel_size", 7)),
        "depths": spec.get("depths", base.get("depths")),
        "dims": spec.get("dims", base.get("dims")),
        "drop_path": spec.get("drop_path", base.get("drop_path", 0.0)),
        "layer_scale_init": spec.get("layer_scale_init", 1e-6),
        "mlp_ratio": CONV2FORMER_MLP_RATIO,
    }
    _check_common(out, where, "conv2former", "t")
    k = out["kernel_size"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise UserError(f"{where}: conv2former kernel_size must be a positive odd integer (7, 11), got {k!r}")
    if out["layer_scale_init"] <= 0:  # every official Conv2Former has both layer scales; there is no 'off'
        raise UserError(f"{where}: conv2former layer_scale_init must be > 0, got {out['layer_scale_init']!r}")
    if out["dims"][0] % 2:  # the stem's first two convs have dims[0] / 2 channels
        raise UserError(f"{where}: conv2former dims[0] must be even (the stem uses dims[0] / 2), got {out['dims']}")
    out["depths"], out["dims"] = [int(d) for d in out["depths"]], [int(d) for d in out["dims"]]
    return out


def _spec_and_base(
    spec: Any, where: str, key: str, title: str, keys: tuple[str, ...], sizes: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A yaml backbone value as a mapping (a bare string is the size) and its size's table row ({} when custom)."""
    if isinstance(spec, str):
        spec = {"size": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: '{key}' must be a size name or a mapping with keys {', '.join(keys)} — got {spec!r}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} under '{key}' — allowed: {', '.join(keys)}")
    size = spec.get("size")
    if size is not None and (not isinstance(size, str) or size not in sizes):  # a list would not even hash
        raise UserError(f"{where}: unknown {title} size {size!r} — use one of {', '.join(sizes)}")
    return spec, sizes.get(size, {})


def _check_common(s: dict[str, Any], where: str, key: str, example: str) -> None:
    """Validate the keys both families share (depths, dims, drop_path, layer_scale_init); one UserError line each."""
    for name in ("depths", "dims"):
        v = s[name]
        if v is None:
            raise UserError(f"{where}: '{key}' needs a size or explicit depths and dims — add e.g. 'size: {example}'")
        ok = isinstance(v, (list, tuple)) and len(v) == 4
        if not ok or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
            raise UserError(f"{where}: {key} {name} must be 4 positive integers, got {v!r}")
    if not isinstance(s["drop_path"], (int, float)) or not 0 <= s["drop_path"] < 1:
        raise UserError(f"{where}: {key} drop_path must be a number in [0, 1), got {s['drop_path']!r}")
    if not isinstance(s["layer_scale_init"], (int, float)):
        raise UserError(f"{where}: {key} layer_scale_init must be a number, got {s['layer_scale_init']!r}")


def num_layers_for(depths: list[int] | tuple[int, ...]) -> int:
    """Layer id of the last group (downsample 3 + stage 3): 3 + (depths[2] - 1) // 3 + 1 (6 for T, 12 for S/B/L)."""
    return 3 + (depths[2] - 1) // 3 + 1


def _stage_ids(stage: ConvNeXt_Block | Conv2Former_Block, num_layers: int) -> dict[int, int]:
    """id(param) -> layer id for one backbone stage module (BRIEF §2 rule, the same for both families)."""
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
    """For every parameter name of a Model (or a wrapped one): its backbone layer id, and num_layers.

    Backbone (ConvNeXt or Conv2Former stages): stem 0, stage 0 -> 1, downsample 1 + stage 1 -> 2, stage-2 block b ->
    3 + b // 3, downsample 2 -> 3, downsample 3 + stage 3 -> num_layers. Everything else (head, Detect) ->
    num_layers + 1. A model without backbone stages gets num_layers 0 and every parameter id 1.
    """
    stages = [m for m in model.modules() if isinstance(m, STAGE_MODULES)]
    num_layers = num_layers_for(_depths_of(stages)) if stages else 0
    by_param: dict[int, int] = {}
    for st in stages:
        by_param.update(_stage_ids(st, num_layers))
    names = {name: by_param.get(id(p), num_layers + 1) for name, p in model.named_parameters()}
    return names, num_layers


def _depths_of(stages: list[ConvNeXt_Block | Conv2Former_Block]) -> list[int]:
    depths = [0, 0, 0, 0]
    for st in stages:
        depths[st.stage] = len(st.blocks)
    return depths
