"""An independent Conv2Former reference for the tests and benchmarks/conv2former.py: the official state-dict layout
(every key and shape, from the architecture description in BRIEF §5 alone), random non-trivial weights in it, and the
official forward pass written with plain functional ops. Nothing here uses models/ except `our_backbone`, which
builds our stage rows for comparison."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.common import Conv2Former_Block


def our_backbone(spec: dict, ch: int = 3) -> nn.Sequential:
    """Our four stage modules for a resolved `conv2former:` spec, as rows 0..3 of a YOLOv5 model."""
    dims, depths = spec["dims"], spec["depths"]
    cins = [ch, *dims[:3]]
    return nn.Sequential(
        *(Conv2Former_Block(cins[s], s, depths, dims, spec["kernel_size"], 0.0, 1e-6) for s in range(4))
    )


def official_shapes(depths: list[int], dims: list[int], k: int, ch: int = 3) -> dict[str, tuple[int, ...]]:
    """Every official backbone state-dict key and its shape, from the architecture description alone."""
    half = dims[0] // 2
    shapes: dict[str, tuple[int, ...]] = {
        "downsample_layers.0.0.weight": (half, ch, 3, 3),
        "downsample_layers.0.3.weight": (half, half, 3, 3),
        "downsample_layers.0.6.weight": (dims[0], half, 2, 2),
    }
    for bn in ("2", "5"):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"downsample_layers.0.{bn}.{name}"] = (half,)
        shapes[f"downsample_layers.0.{bn}.num_batches_tracked"] = ()
    for i in (1, 2, 3):
        shapes |= {
            f"downsample_layers.{i}.0.weight": (dims[i - 1],),
            f"downsample_layers.{i}.0.bias": (dims[i - 1],),
            f"downsample_layers.{i}.1.weight": (dims[i], dims[i - 1], 2, 2),
            f"downsample_layers.{i}.1.bias": (dims[i],),
        }
    for i, (depth, d) in enumerate(zip(depths, dims)):
        convs = {
            "attn.att.0": (d, d, 1, 1),
            "attn.att.2": (d, 1, k, k),
            "attn.v": (d, d, 1, 1),
            "attn.proj": (d, d, 1, 1),
            "mlp.fc1": (4 * d, d, 1, 1),
            "mlp.pos": (4 * d, 1, 3, 3),
            "mlp.fc2": (d, 4 * d, 1, 1),
        }
        for j in range(depth):
            p = f"stages.{i}.{j}."
            shapes |= {p + "layer_scale_1": (d,), p + "layer_scale_2": (d,)}
            for norm in ("attn.norm", "mlp.norm"):
                shapes |= {f"{p}{norm}.weight": (d,), f"{p}{norm}.bias": (d,)}
            for name, shape in convs.items():
                shapes |= {f"{p}{name}.weight": shape, f"{p}{name}.bias": (shape[0],)}
    return shapes


def classifier_shapes(dim: int, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """The official ImageNet classifier: head = 1x1 conv to 1280, GELU, LayerNorm; pred = Linear(1280, classes)."""
    return {
        "head.0.weight": (1280, dim, 1, 1),
        "head.0.bias": (1280,),
        "head.2.weight": (1280,),
        "head.2.bias": (1280,),
        "pred.weight": (classes, 1280),
        "pred.bias": (classes,),
    }


def random_official_state(
    shapes: dict[str, tuple[int, ...]], seed: int = 0, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Non-trivial random weights: layer scales 0.5..1.5 (not 1e-6), norms away from identity, BN stats away from 0/1,
    conv weights scaled by 1/sqrt(fan-in) so activations stay O(1) through every block. device 'meta': shapes only."""
    if torch.device(device).type == "meta":
        return {key: torch.empty(shape, device="meta", dtype=_dtype(key)) for key, shape in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith(("layer_scale_1", "layer_scale_2", "running_var")) or (len(shape) == 1 and "weight" in key):
            sd[key] = torch.rand(shape, generator=g) + 0.5  # scales, variances, norm gains: 0.5 .. 1.5
        elif len(shape) == 1:  # biases, running means
            sd[key] = torch.randn(shape, generator=g) * 0.2
        else:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            sd[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return sd


def _dtype(key: str) -> torch.dtype:
    return torch.long if key.endswith("num_batches_tracked") else torch.float32


def ln_channels_first(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    u = x.mean(1, keepdim=True)
    var = (x - u).pow(2).mean(1, keepdim=True)
    return w[:, None, None] * (x - u) / torch.sqrt(var + eps) + b[:, None, None]


def reference_stages(
    sd: dict[str, torch.Tensor], x: torch.Tensor, depths: list[int], k: int, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    """The official forward written from BRIEF §5 with plain functional ops (float64 unless dtype says otherwise);
    the four stage outputs."""
    sd = {key: v.to(dtype) if v.is_floating_point() else v for key, v in sd.items()}
    x = x.to(dtype)

    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        m, v = sd[p + "running_mean"], sd[p + "running_var"]
        return (h - m[:, None, None]) / torch.sqrt(v[:, None, None] + 1e-5) * sd[p + "weight"][:, None, None] + sd[
            p + "bias"
        ][:, None, None]

    def conv(h: torch.Tensor, p: str, **kw) -> torch.Tensor:
        return F.conv2d(h, sd[p + "weight"], sd.get(p + "bias"), **kw)

    x = bn(F.gelu(conv(x, "downsample_layers.0.0.", stride=2, padding=1)), "downsample_layers.0.2.")
    x = bn(F.gelu(conv(x, "downsample_layers.0.3.", padding=1)), "downsample_layers.0.5.")
    x = conv(x, "downsample_layers.0.6.", stride=2)
    outs = []
    for i, depth in enumerate(depths):
        if i > 0:
            p = f"downsample_layers.{i}."
            x = conv(ln_channels_first(x, sd[p + "0.weight"], sd[p + "0.bias"]), p + "1.", stride=2)
        d = x.shape[1]
        for j in range(depth):
            p = f"stages.{i}.{j}."
            h = ln_channels_first(x, sd[p + "attn.norm.weight"], sd[p + "attn.norm.bias"])
            a = conv(F.gelu(conv(h, p + "attn.att.0.")), p + "attn.att.2.", padding=k // 2, groups=d)
            x = x + sd[p + "layer_scale_1"][:, None, None] * conv(a * conv(h, p + "attn.v."), p + "attn.proj.")
            h = F.gelu(conv(ln_channels_first(x, sd[p + "mlp.norm.weight"], sd[p + "mlp.norm.bias"]), p + "mlp.fc1."))
            h = h + F.gelu(conv(h, p + "mlp.pos.", padding=1, groups=4 * d))
            x = x + sd[p + "layer_scale_2"][:, None, None] * conv(h, p + "mlp.fc2.")
        outs.append(x)
    return outs


def to_rows(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys -> our rows' keys by a pure prefix change: downsample_layers.s -> s.downsample, stages.s ->
    s.blocks."""
    out = {}
    for key, v in sd.items():
        top, s, rest = key.split(".", 2)
        out[f"{s}.{'downsample' if top == 'downsample_layers' else 'blocks'}.{rest}"] = v
    return out


def max_rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()
