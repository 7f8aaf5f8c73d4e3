"""load_backbone_weights: numerical equivalence with torchvision / an independent V2 reference, every key format,
official-name resolution, and clean refusals that leave the model untouched."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision

from models.pretrained import describe_canonical, load_backbone_weights, official_url
from models.yolo import Model
from tests.fixtures_models import micro_cfg, random_official_v2
from utils.core.errors import UserError


def _backbone_outputs(model: Model, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for i in range(model.backbone_rows):
        x = model.model[i](x)
        outs.append(x)
    return outs


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tv_tiny() -> torch.nn.Module:
    """torchvision convnext_tiny with random weights and non-trivial layer scale / LayerNorm affine params.

    At init gamma = 1e-6 would hide every block behind the residual; randomising it makes the test sensitive to
    each block's mapping.
    """
    torch.manual_seed(0)
    tv = torchvision.models.convnext_tiny(weights=None).eval()
    with torch.no_grad():
        for name, p in tv.named_parameters():
            if name.endswith("layer_scale"):
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1:  # LayerNorm weight / bias, conv / linear biases
                p.add_(torch.randn_like(p) * 0.1)
    return tv


@pytest.fixture(scope="module")
def tiny_model() -> Model:
    return Model("yolov5_ConvNeXt.yaml").eval()


def tv_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key a torchvision ConvNeXt state dict into the facebookresearch layout (written here, independently)."""
    names = {"0": "dwconv", "2": "norm", "3": "pwconv1", "5": "pwconv2"}
    out = {}
    for k, v in sd.items():
        f, rest = k.split(".", 2)[1], k.split(".", 2)[2]
        if k.startswith("classifier."):
            out[
                {
                    "classifier.0.weight": "norm.weight",
                    "classifier.0.bias": "norm.bias",
                    "classifier.2.weight": "head.weight",
                    "classifier.2.bias": "head.bias",
                }[k]
            ] = v
        elif int(f) % 2 == 0:
            out[f"downsample_layers.{int(f) // 2}.{rest}"] = v
        else:
            j, tail = rest.split(".", 1)
            if tail == "layer_scale":
                out[f"stages.{int(f) // 2}.{j}.gamma"] = v.flatten()
            else:
                _, idx, param = tail.split(".")
                out[f"stages.{int(f) // 2}.{j}.{names[idx]}.{param}"] = v
    return out


def _compare_with_torchvision(model: Model, tv: torch.nn.Module) -> float:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = _backbone_outputs(model, x)
        ref, y = [], x
        for k, layer in enumerate(tv.features):
            y = layer(y)
            if k % 2 == 1:
                ref.append(y)
    assert [o.shape for o in ours] == [r.shape for r in ref]
    return max(float((o - r).abs().max()) for o, r in zip(ours, ref))


def test_torchvision_state_dict_gives_identical_stage_outputs(tiny_model: Model, tv_tiny) -> None:
    report = load_backbone_weights(tiny_model, tv_tiny.state_dict())
    n_backbone = sum(1 for _ in tiny_model.model[:4].parameters())
    assert report.format == "torchvision"
    assert (
        len(report.loaded) == len(set(report.loaded)) == n_backbone == 178
    )  # 18 blocks x 9 + stem 4 + 3 downsamples x 4
    assert report.missing == [] and sorted(report.skipped) == [
        "classifier.0.bias",
        "classifier.0.weight",
        "classifier.2.bias",
        "classifier.2.weight",
    ]
    assert _compare_with_torchvision(tiny_model, tv_tiny) < 1e-4


def test_official_format_file_gives_identical_stage_outputs(tiny_model: Model, tv_tiny, tmp_path) -> None:
    torch.manual_seed(1)
    for p in tiny_model.model[:4].parameters():  # scramble so that a no-op load would fail the comparison
        p.data.normal_()
    path = tmp_path / "convnext_tiny_1k_224_ema.pth"
    torch.save({"model": tv_to_official(tv_tiny.state_dict())}, path)
    report = load_backbone_weights(tiny_model, str(path))
    assert report.format == "official" and len(report.loaded) == 178 and len(report.skipped) == 4
    assert _compare_with_torchvision(tiny_model, tv_tiny) < 1e-4


def test_head_is_untouched_by_backbone_load(tv_tiny) -> None:
    model = Model("yolov5_ConvNeXt.yaml")
    head = {k: v for k, v in _state(model).items() if not re.match(r"model\.[0-3]\.", k)}
    load_backbone_weights(model, tv_tiny.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in head.items())


# --------------------------------------------------------------------------------------------------- V2 reference
def _ref_v2_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, depths: list[int]) -> list[torch.Tensor]:
    """Functional ConvNeXt-V2 written from the paper's equations, driven by an official-format state dict."""

    def ln_cf(t, pre):  # channels-first LayerNorm via explicit mean / var
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        t = (t - u) / torch.sqrt(s + 1e-6)
        return sd[pre + ".weight"][:, None, None] * t + sd[pre + ".bias"][:, None, None]

    outs = []
    for s in range(4):
        d = f"downsample_layers.{s}"
        if s == 0:
            x = ln_cf(F.conv2d(x, sd[f"{d}.0.weight"], sd[f"{d}.0.bias"], stride=4), f"{d}.1")
        else:
            x = F.conv2d(ln_cf(x, f"{d}.0"), sd[f"{d}.1.weight"], sd[f"{d}.1.bias"], stride=2)
        for j in range(depths[s]):
            b = f"stages.{s}.{j}"
            y = F.conv2d(x, sd[f"{b}.dwconv.weight"], sd[f"{b}.dwconv.bias"], padding=3, groups=x.shape[1])
            y = ln_cf(y, f"{b}.norm").permute(0, 2, 3, 1)
            y = F.gelu(y @ sd[f"{b}.pwconv1.weight"].T + sd[f"{b}.pwconv1.bias"])
            g = y.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
            y = sd[f"{b}.grn.gamma"] * (y * (g / (g.mean(-1, keepdim=True) + 1e-6))) + sd[f"{b}.grn.beta"] + y
            y = y @ sd[f"{b}.pwconv2.weight"].T + sd[f"{b}.pwconv2.bias"]
            x = x + y.permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def official_v2_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official V2 keys -> timm keys, with timm's 1-D GRN params and conv_mlp (out, in, 1, 1) fc weights."""
    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"downsample_layers\.0\.(\d)\.(\w+)", k):
            out[f"stem.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"downsample_layers\.(\d)\.(\d)\.(\w+)", k):
            out[f"stages.{m[1]}.downsample.{m[2]}.{m[3]}"] = v
        elif m := re.fullmatch(r"stages\.(\d)\.(\d+)\.(\w+)\.(\w+)", k):
            name = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}.get(m[3])
            if m[3] == "grn":
                out[f"stages.{m[1]}.blocks.{m[2]}.mlp.grn.{'weight' if m[4] == 'gamma' else 'bias'}"] = v.flatten()
            else:
                out[f"stages.{m[1]}.blocks.{m[2]}.{name}.{m[4]}"] = (
                    v[..., None, None] if m[3][:2] == "pw" and m[4] == "weight" else v
                )
        else:
            out[
                {
                    "norm.weight": "head.norm.weight",
                    "norm.bias": "head.norm.bias",
                    "head.weight": "head.fc.weight",
                    "head.bias": "head.fc.bias",
                }[k]
            ] = v
    return out


@pytest.mark.parametrize("fmt", ["official", "timm"])
def test_v2_atto_matches_independent_reference(fmt: str) -> None:
    depths, dims = [2, 2, 6, 2], [40, 80, 160, 320]
    sd = random_official_v2(depths, dims)
    model = Model("yolov5_ConvNeXtV2-atto.yaml").eval()
    report = load_backbone_weights(model, sd if fmt == "official" else official_v2_to_timm(sd))
    assert report.format == fmt and len(report.loaded) == len(sd) - 4 and not report.missing
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, ref = _backbone_outputs(model, x), _ref_v2_forward(sd, x, depths)
    assert max(float((o - r).abs().max()) for o, r in zip(ours, ref)) < 1e-4
    assert float(ref[-1].abs().mean()) > 0.1  # the reference output is not trivially small


# ---------------------------------------------------------------------------------------------------- refusals
def test_size_mismatch_is_refused_naming_both_and_nothing_loaded(tv_tiny) -> None:
    model = Model("yolov5_ConvNeXt-atto.yaml")
    before = _state(model)
    with pytest.raises(UserError, match=r"ConvNeXt-tiny weights but the model backbone is ConvNeXt-atto"):
        load_backbone_weights(model, tv_tiny.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_v1_weights_onto_v2_model_are_refused() -> None:
    v1 = Model(micro_cfg(version=1))
    v2 = Model(micro_cfg(version=2))
    sd = {k.replace("model.", "", 1): v for k, v in v1.state_dict().items()}  # our keys: not a known format
    with pytest.raises(UserError, match="unknown key format"):
        load_backbone_weights(v2, sd)
    official = {
        re.sub(r"^model\.(\d)\.downsample\.", lambda m: f"downsample_layers.{m[1]}.", k): v
        for k, v in v1.state_dict().items()
        if re.match(r"model\.[0-3]\.downsample\.", k)
    }
    official.update(
        {
            re.sub(r"^model\.(\d)\.blocks\.", lambda m: f"stages.{m[1]}.", k): v
            for k, v in v1.state_dict().items()
            if re.match(r"model\.[0-3]\.blocks\.", k)
        }
    )
    assert describe_canonical(official) == ([1, 1, 1, 1], [16, 32, 64, 128], 1)
    with pytest.raises(UserError, match=r"ConvNeXt\(depths=\[1, 1, 1, 1\].*backbone is ConvNeXtV2\("):
        load_backbone_weights(v2, official)
    assert len(load_backbone_weights(Model(micro_cfg(version=1)), official).loaded) == len(official)


def test_unreadable_and_foreign_files_are_refused(tmp_path) -> None:
    model = Model(micro_cfg())
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file .*broken.pth"):
        load_backbone_weights(model, bad)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, other)
    with pytest.raises(UserError, match="unknown key format"):
        load_backbone_weights(model, other)
    with pytest.raises(UserError, match="unknown weights name or file 'nope'"):
        load_backbone_weights(model, "nope")
    with pytest.raises(UserError, match="no ConvNeXt_Block stages"):
        load_backbone_weights(Model("yolov5n.yaml"), {"stem.0.weight": torch.zeros(1)})


def test_official_names_resolve_to_published_urls() -> None:
    base = "https://dl.fbaipublicfiles.com/convnext/"
    assert official_url("convnext_tiny_1k") == base + "convnext_tiny_1k_224_ema.pth"
    assert official_url("convnext_base_22k") == base + "convnext_base_22k_224.pth"
    assert official_url("convnext_large_22k_1k") == base + "convnext_large_22k_1k_224.pth"
    assert official_url("convnext_xlarge_22k_1k") == base + "convnext_xlarge_22k_1k_224_ema.pth"
    assert official_url("convnext_small_1k_384") == base + "convnext_small_1k_384.pth"
    assert official_url("convnextv2_atto_1k") == base + "convnextv2/im1k/convnextv2_atto_1k_224_ema.pt"
    assert official_url("convnext_tiny_22k_224.pth") == base + "convnext_tiny_22k_224.pth"
    # atto..nano V1 and small / xlarge V2 were never released officially
    for bad in ("convnext_giant_1k", "convnextv2_small_1k", "convnext_atto_1k", "convnext_tiny", "convnextv2_tiny_22k"):
        with pytest.raises(UserError, match="unknown weights name"):
            official_url(bad)
