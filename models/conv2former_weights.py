"""Official Conv2Former ImageNet weights (github.com/HVision-NKU/Conv2Former) onto a Model's Conv2Former_Block rows.

models/pretrained.py reads the file (timm training file, bare state dict, DDP `module.` prefix, EMA choice) and calls
this module once it holds a flat state dict:

    rows = conv2former_rows(model)                      # {stage: (name prefix, row)}
    loaded, skipped, missing = load_conv2former(rows, state_dict, "conv2former_t.pth.tar")

The official submodule names are ours (models/common.py), so `remap_conv2former` is a pure prefix change:
`downsample_layers.s.*` -> `<row>.downsample.*`, `stages.s.j.*` -> `<row>.blocks.j.*`; the classifier (`head.*`,
`pred.*`) is skipped. Every check (kernel, depths, dims, each key and shape) runs before the first tensor is copied.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.common import Conv2Former_Block
from models.sizes import CONV2FORMER_SIZES
from utils.core.errors import UserError
from utils.core.parallel import unwrap

# Globals torch.load(weights_only=True) may rebuild on top of its own list: timm's training files pickle the run's
# argparse.Namespace under 'args'. Rebuilding one runs no code of the file (object.__new__, then its __dict__ is
# updated with values weights_only already allows).
TRAINING_FILE_GLOBALS = [argparse.Namespace]
OFFICIAL_REPO = "github.com/HVision-NKU/Conv2Former"
_CLASSIFIER = re.compile(r"^(head|pred)\.")
_KEY = re.compile(r"(downsample_layers|stages)\.(\d+)\.(.+)")
_MARK = re.compile(r"stages\.\d+\.\d+\.(attn\.att\.\d+\.weight|layer_scale_1)$")  # keys only Conv2Former has


@dataclass(frozen=True)
class Conv2FormerShape:
    """What the weights or the model backbone are: the modulation kernel, depths and dims per stage."""

    kernel_size: int
    depths: tuple[int, ...]
    dims: tuple[int, ...]

    def size(self, kernel: bool = True) -> str | None:
        """The size-table name this shape is (depths and dims alone when kernel is False), else None."""
        for name, s in CONV2FORMER_SIZES.items():
            same = tuple(s["depths"]) == self.depths and tuple(s["dims"]) == self.dims
            if same and (not kernel or s["kernel_size"] == self.kernel_size):
                return name
        return None

    def __str__(self) -> str:
        name = self.size() or self.size(kernel=False)
        if name:
            return f"Conv2Former-{name} (kernel {self.kernel_size})"
        return f"Conv2Former(kernel {self.kernel_size}, depths {list(self.depths)}, dims {list(self.dims)})"

    def yaml_hint(self) -> str:
        """How a model yaml gets this backbone."""
        if name := self.size():
            return f"use models/yolov5_Conv2Former-{name}.yaml (or 'conv2former: {name}' in your yaml)"
        if name := self.size(kernel=False):
            return f"set 'conv2former: {{size: {name}, kernel_size: {self.kernel_size}}}' in the model yaml"
        return (
            f"set 'conv2former: {{kernel_size: {self.kernel_size}, depths: {list(self.depths)}, "
            f"dims: {list(self.dims)}}}' in the model yaml"
        )


def is_conv2former_state(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a flat state dict (prefixes already stripped) holds Conv2Former blocks rather than ConvNeXt ones."""
    return any(_MARK.match(k) for k in sd)


def conv2former_rows(model: nn.Module) -> dict[int, tuple[str, Conv2Former_Block]]:
    """{stage: (the row's name prefix in the model's state dict, e.g. 'model.2.', row)} of every Conv2Former row."""
    modules = unwrap(model).named_modules()
    return {m.stage: (f"{name}." if name else "", m) for name, m in modules if isinstance(m, Conv2Former_Block)}


def shape_of_rows(rows: dict[int, tuple[str, Conv2Former_Block]]) -> Conv2FormerShape:
    stages = [rows[s][1] if s in rows else None for s in range(4)]
    return Conv2FormerShape(
        kernel_size=next(r.kernel_size for r in stages if r is not None),
        depths=tuple(len(r.blocks) if r is not None else 0 for r in stages),
        dims=tuple(int(r.blocks[0].layer_scale_1.numel()) if r is not None else 0 for r in stages),
    )


def shape_of_state(sd: dict[str, torch.Tensor]) -> Conv2FormerShape:
    """Kernel from the depthwise weight `stages.i.j.attn.att.2.weight` (d, 1, k, k); depths from the block indices;
    dims from the layer scales (each block's (d,))."""
    depths, dims, kernels = [0] * 4, [0] * 4, set()
    for k, v in sd.items():
        m = re.match(r"stages\.(\d)\.(\d+)\.(.+)", k)
        if m is None:
            continue
        s = int(m[1])
        depths[s] = max(depths[s], int(m[2]) + 1)
        if m[3] == "layer_scale_1":
            dims[s] = int(v.numel())
        elif m[3] == "attn.att.2.weight" and v.ndim == 4:
            kernels.add(int(v.shape[-1]))
    return Conv2FormerShape(kernel_size=max(kernels, default=0), depths=tuple(depths), dims=tuple(dims))


def remap_conv2former(
    sd: dict[str, torch.Tensor], prefixes: dict[int, str], where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The one key map from official names to the model's: ({model key: tensor}, skipped classifier keys).

    prefixes: {stage: the row's name prefix}. A key of neither the backbone nor the classifier is a UserError."""
    out: dict[str, torch.Tensor] = {}
    skipped, unknown = [], []
    for k, v in sd.items():
        m = _KEY.fullmatch(k)
        if _CLASSIFIER.match(k):
            skipped.append(k)
        elif m is None or int(m[2]) not in prefixes:
            unknown.append(k)
        else:
            out[f"{prefixes[int(m[2])]}{'downsample' if m[1] == 'downsample_layers' else 'blocks'}.{m[3]}"] = v
    if unknown:
        raise UserError(
            f"{where}: {len(unknown)} key(s) that are not part of an official Conv2Former, e.g. {unknown[:3]} — "
            f"pass an ImageNet classification checkpoint from {OFFICIAL_REPO}"
        )
    return out, skipped


def load_conv2former(
    rows: dict[int, tuple[str, Conv2Former_Block]], sd: dict[str, torch.Tensor], where: str
) -> tuple[list[str], list[str], list[str]]:
    """Copy official Conv2Former weights (flat, prefixes stripped) onto the rows: (loaded, skipped, missing) keys.

    Refuses a kernel / depth / dim mismatch in one line naming both sides, and any key without a place or with
    another shape, before the first tensor is copied. Parameters and the stem BatchNorms' running statistics load."""
    have, want = shape_of_state(sd), shape_of_rows(rows)
    if have != want:
        raise UserError(f"{where} holds {have} weights but the model backbone is {want} — {have.yaml_hint()}")
    mapped, skipped = remap_conv2former(sd, {s: prefix for s, (prefix, _) in rows.items()}, where)
    targets = {
        prefix + name: t for prefix, row in rows.values() for name, t in (*row.named_parameters(), *row.named_buffers())
    }
    for k, v in mapped.items():
        if k not in targets:
            raise UserError(f"{where}: {k} has no place in the model's Conv2Former backbone — is it an official file?")
        if targets[k].shape != v.shape:
            raise UserError(
                f"{where}: {k} has shape {list(v.shape)} but the model expects {list(targets[k].shape)} — "
                f"weights and model yaml are different Conv2Former sizes"
            )
    return copy_tensors(targets, mapped), skipped, [k for k in targets if k not in mapped]


def copy_tensors(targets: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> list[str]:
    """Copy each checked source tensor into the model tensor of the same key (in place, no autograd); the keys."""
    with torch.no_grad():
        for k, v in source.items():
            targets[k].copy_(v)
    return list(source)


def check_source_is_file(source: Any, model: nn.Module) -> None:
    """Conv2Former weights have no download names: a source for a Conv2Former model (or named like one) that is not a
    file is one UserError line saying where the files come from."""
    if isinstance(source, dict) or Path(source).is_file():
        return
    if conv2former_rows(model) or "conv2former" in str(source).lower():
        raise UserError(
            f"{source} is not a file — Conv2Former weights have no download names: download the checkpoint "
            f"(e.g. conv2former_t.pth.tar) from the links in the README of {OFFICIAL_REPO} and pass its path"
        )
