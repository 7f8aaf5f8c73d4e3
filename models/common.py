"""Building blocks: YOLOv5 layers (Conv, Bottleneck, C3, SPPF, Concat, ...), ConvNeXt V1/V2 and Conv2Former stages,
the classifier heads (ConvNeXtHead, Conv2FormerHead, YOLOv5's Classify).

Every module here is constructed from yaml rows by models/yolo.py:parse_model. The first constructor argument is
always the input channel count c1 (except Concat / Upsample which need none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import stochastic_depth


def autopad(k: int | Sequence[int], p: int | None = None, d: int = 1) -> int | list[int]:
    """'same' padding for an odd kernel (dilation d) when p is not given."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU; after fuse() the BN is folded into the conv."""

    default_act = nn.SiLU()

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    """Depth-wise Conv (groups = gcd of channels)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True) -> None:
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv with an optional residual (only when channels match)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with 3 convolutions: two 1x1 branches, n Bottlenecks on one, concatenated, 1x1 out."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools equal SPP(k, 2k-1, 3k-2)."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along dimension d."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


# ----------------------------------------------------------------------------------------------------------- ConvNeXt
class LayerNorm(nn.Module):
    """LayerNorm over channels for channels_last (N, H, W, C) or channels_first (N, C, H, W) tensors.

    channels_first permutes to channels-last and back so that the fused F.layer_norm kernel does the work
    (one kernel instead of separate mean / var / normalise ops).
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last") -> None:
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"LayerNorm data_format must be channels_last or channels_first, not {data_format!r}")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (torchvision.ops.stochastic_depth, 'row' mode); identity in eval or at p=0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        return stochastic_depth(x, self.p, "row", self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on channels-last input (N, H, W, C).

    gamma / beta start at zero, so a fresh GRN is the identity; their shape (1, 1, 1, C) follows the official code.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)  # per-channel L2 over H, W
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """ConvNeXt block: dw 7x7 -> LN -> Linear d->4d -> GELU -> [GRN] -> Linear 4d->d -> [layer scale] -> drop-path + x.

    V1 is the default (layer scale `gamma`, no GRN); V2 is grn=True, layer_scale_init=0 (GRN after the GELU, no
    layer scale). layer_scale_init <= 0 creates no gamma parameter at all, so nothing sits unused. The submodule
    names are the official ones (dwconv, norm, pwconv1, grn, pwconv2, gamma): checkpoints and the backbone weight
    loader (models/pretrained.py) depend on them.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6, grn: bool = False) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim) if grn else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (N, H, W, C): Linear layers act on the last dim
        y = self.act(self.pwconv1(y))
        if self.grn is not None:
            y = self.grn(y)
        y = self.pwconv2(y)
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def drop_path_rates(depths: Sequence[int], rate: float) -> list[float]:
    """Global linear drop-path schedule over all blocks of all stages: block k gets rate * k / (total - 1)."""
    total = sum(depths)
    return [rate * k / (total - 1) if total > 1 else 0.0 for k in range(total)]


def convnext_stem(c1: int, dim: int) -> nn.Sequential:
    """ConvNeXt stem (stride 4): 4x4 stride-4 patchify conv + channels-first LayerNorm."""
    return nn.Sequential(
        nn.Conv2d(c1, dim, kernel_size=4, stride=4), LayerNorm(dim, eps=1e-6, data_format="channels_first")
    )


class BackboneStage(nn.Module):
    """One backbone stage, the bookkeeping ConvNeXt_Block and Conv2Former_Block share: its own downsample layer
    (`stem(c1, dim)` for stage 0, channels-first LayerNorm + 2x2 stride-2 conv after) followed by depths[stage] blocks
    `block(dim, rate)`; conv / linear weights get both families' official init. The names `stage`, `downsample`,
    `blocks` are what checkpoints, the weight loaders and layer decay (models/sizes.py) read.

    Args (the first four and drop_path are every stage row's):
        c1: input channels (image channels for stage 0, dims[stage - 1] otherwise).
        stage: 0..3.
        depths, dims: the whole network's depths / dims (needed for the global drop-path offset).
        drop_path: the network-wide drop-path rate (each block's rate follows the global linear rule).
    Output channels = dims[stage].
    """

    def __init__(
        self,
        c1: int,
        stage: int,
        depths: Sequence[int],
        dims: Sequence[int],
        drop_path: float,
        stem: Callable[[int, int], nn.Module],
        block: Callable[[int, float], nn.Module],
    ) -> None:
        super().__init__()
        self.stage = int(stage)
        dim = dims[stage]
        if stage == 0:
            self.downsample = stem(c1, dim)
        else:
            self.downsample = nn.Sequential(
                LayerNorm(c1, eps=1e-6, data_format="channels_first"), nn.Conv2d(c1, dim, kernel_size=2, stride=2)
            )
        start = sum(depths[:stage])  # global index of this stage's first block
        rates = drop_path_rates(depths, drop_path)[start : start + depths[stage]]
        self.blocks = nn.Sequential(*(block(dim, r) for r in rates))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # ConvNeXt's and Conv2Former's init: trunc-normal(0.02) on conv / linear weights, zero bias; norms keep theirs.
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt_Block(BackboneStage):
    """One ConvNeXt stage (BackboneStage: c1, stage, depths, dims, drop_path): the ConvNeXt stem for stage 0, then
    ConvNeXt Blocks.

    Args:
        layer_scale_init: V1 layer scale init value (ignored for V2).
        version: 1 or 2 (V2: GRN, no layer scale).
    """

    def __init__(
        self,
        c1: int,
        stage: int,
        depths: Sequence[int],
        dims: Sequence[int],
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
        version: int = 1,
    ) -> None:
        v2 = int(version) == 2
        scale = 0.0 if v2 else layer_scale_init
        super().__init__(c1, stage, depths, dims, drop_path, convnext_stem, lambda dim, r: Block(dim, r, scale, grn=v2))
        self.version = int(version)


# -------------------------------------------------------------------------------------------------------- Conv2Former
# Submodule names follow the official Conv2Former code, so that an official state dict maps onto a stage row by a pure
# prefix change: `downsample_layers.s.*` -> `downsample.*`, `stages.s.j.*` -> `blocks.j.*`.
class ConvMod(nn.Module):
    """Conv2Former convolutional modulation (official `attn`): x = LN(x); proj(DWConv_k(GELU(att.0(x))) * v(x))."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-6, data_format="channels_first")
        self.att = nn.Sequential(
            nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        )
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.proj(self.att(x) * self.v(x))


class ConvMLP(nn.Module):
    """Conv2Former MLP (official `mlp`): LN -> 1x1 to r*d -> GELU -> x + GELU(dw 3x3 `pos`(x)) -> 1x1 back to d."""

    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm(dim, eps=1e-6, data_format="channels_first")
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.norm(x)))
        return self.fc2(x + self.act(self.pos(x)))


class Conv2FormerLayer(nn.Module):
    """One Conv2Former block: x + drop_path(layer_scale_1 * attn(x)), then the same with mlp and layer_scale_2."""

    def __init__(
        self, dim: int, kernel_size: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6, mlp_ratio: int = 4
    ) -> None:
        super().__init__()
        self.attn = ConvMod(dim, kernel_size)
        self.mlp = ConvMLP(dim, mlp_ratio)
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        scale = scale.view(-1, 1, 1)
        if self.training and self.drop_path.p > 0:
            return x + self.drop_path(y * scale)
        return torch.addcmul(x, y, scale)  # x + y * scale in one kernel (no drop-path in eval)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self.attn(x), self.layer_scale_1)
        return self._residual(x, self.mlp(x), self.layer_scale_2)


def conv2former_stem(c1: int, dim: int) -> nn.Sequential:
    """Official stem (stride 4): 3x3 s2 -> GELU -> BN -> 3x3 s1 -> GELU -> BN -> 2x2 s2 to dim; no bias, no final norm.

    The BatchNorms keep PyTorch's defaults (eps 1e-5): models/yolo.py leaves them out of YOLOv5's BN settings so
    ImageNet statistics stay exact."""
    half = dim // 2
    return nn.Sequential(
        nn.Conv2d(c1, half, 3, 2, 1, bias=False),
        nn.GELU(),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, half, 3, 1, 1, bias=False),
        nn.GELU(),
        nn.BatchNorm2d(half),
        nn.Conv2d(half, dim, 2, 2, bias=False),
    )


class Conv2Former_Block(BackboneStage):
    """One Conv2Former stage (BackboneStage: c1, stage, depths, dims, drop_path): the official stem for stage 0, then
    Conv2FormerLayers.

    Args:
        kernel_size: the depthwise kernel of the modulation (7 or 11 in the official sizes).
        layer_scale_init: initial value of both layer scales.
        mlp_ratio: MLP expansion (4 in every official size).
    """

    def __init__(
        self,
        c1: int,
        stage: int,
        depths: Sequence[int],
        dims: Sequence[int],
        kernel_size: int = 11,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
        mlp_ratio: int = 4,
    ) -> None:
        k = int(kernel_size)

        def layer(dim: int, rate: float) -> Conv2FormerLayer:
            return Conv2FormerLayer(dim, k, rate, layer_scale_init, mlp_ratio)

        super().__init__(c1, stage, depths, dims, drop_path, conv2former_stem, layer)
        self.kernel_size = k


# --------------------------------------------------------------------------------------------------- classifier heads
# The last row of a classifier yaml (models/classifier.py): [-1, 1, <head>, [nc]] or [nc, dropout]. Submodule names
# are the official ones, so a checkpoint's classifier maps onto the row by a prefix change. `fc` names the one layer
# whose shape depends on the class count; reset_classifier() draws it afresh (a checkpoint with another class count).
def _init_linear(m: nn.Module) -> None:
    # the official ConvNeXt / Conv2Former init: trunc-normal(0.02) weights, zero bias
    nn.init.trunc_normal_(m.weight, std=0.02)
    nn.init.zeros_(m.bias)


class ConvNeXtHead(nn.Module):
    """ConvNeXt V1 and V2 classifier (official `norm`, `head`): global average pool -> LayerNorm (eps 1e-6) ->
    dropout -> Linear(c1, nc)."""

    fc = "head"

    def __init__(self, c1: int, nc: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm(c1, eps=1e-6)  # channels-last: it normalises the pooled (N, C)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c1, nc)
        self.reset_classifier()

    def reset_classifier(self) -> None:
        _init_linear(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.norm(x.mean((-2, -1)))))


class Conv2FormerHead(nn.Module):
    """Conv2Former classifier (official `head`, `pred`): Conv 1x1 c1 -> 1280, GELU, channels-first LayerNorm ->
    global average pool -> dropout -> Linear(1280, nc)."""

    fc = "pred"

    def __init__(self, c1: int, nc: int = 1000, dropout: float = 0.0, hidden: int = 1280) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(c1, hidden, 1), nn.GELU(), LayerNorm(hidden, eps=1e-6, data_format="channels_first")
        )
        self.drop = nn.Dropout(dropout)
        self.pred = nn.Linear(hidden, nc)
        _init_linear(self.head[0])
        self.reset_classifier()

    def reset_classifier(self) -> None:
        _init_linear(self.pred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.drop(self.head(x).mean((-2, -1))))


class Classify(nn.Module):
    """YOLOv5's classifier head (its yolov5*-cls models): Conv 1x1 c1 -> 1280 (+ BN + SiLU) -> global average pool ->
    dropout -> Linear(1280, nc)."""

    fc = "linear"

    def __init__(self, c1: int, nc: int = 1000, dropout: float = 0.0, hidden: int = 1280) -> None:
        super().__init__()
        self.conv = Conv(c1, hidden, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, nc)

    def reset_classifier(self) -> None:
        self.linear.reset_parameters()  # PyTorch's default init, as YOLOv5's Classify keeps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))
