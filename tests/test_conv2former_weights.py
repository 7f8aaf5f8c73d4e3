"""Official Conv2Former weights through load_backbone_weights: every accepted layout (timm training file with
state_dict and / or state_dict_ema and its argparse args, bare state dict, DDP `module.` prefix) gives stage outputs
equal to the independent reference (tests/reference_conv2former.py); every official key of every size finds its
place; kernel, size and family mismatches, unknown keys, truncated, foreign and hostile files are refused in one line
before anything is copied; train.py turns a bad file into one stderr line and exit code 2."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import train
from models.pretrained import load_backbone_weights
from models.sizes import CONV2FORMER_SIZES, resolve_conv2former
from models.yolo import Model
from tests.fixtures_models import micro_cfg, random_official_v2
from tests.reference_conv2former import (
    classifier_shapes,
    max_rel_diff,
    official_shapes,
    our_backbone,
    random_official_state,
    reference_stages,
)
from utils.core.errors import UserError
from utils.core.files import ROOT

SIZES = list(CONV2FORMER_SIZES)
CUSTOM = {"kernel_size": 5, "depths": [1, 2, 1, 1], "dims": [16, 24, 32, 48]}  # a small custom size
N_YAML = ROOT / "models" / "yolov5_Conv2Former-n.yaml"
LAYOUTS = ["timm", "timm_ema", "bare", "ddp"]


def official_weights(spec: dict, seed: int = 0, device: str = "cpu", kernel: int | None = None) -> dict:
    """Random non-trivial official weights of a resolved spec, with the ImageNet classifier (head, pred)."""
    k = kernel or spec["kernel_size"]
    shapes = official_shapes(spec["depths"], spec["dims"], k) | classifier_shapes(spec["dims"][-1])
    return random_official_state(shapes, seed, device)


def in_layout(layout: str, sd: dict, other: dict | None = None) -> dict[str, Any]:
    """sd as a file of the given layout. timm_ema: sd is the EMA, `other` the raw weights next to it."""
    args = argparse.Namespace(model="conv2former_n", lr=1e-3, drop_path=0.1, input_size=(3, 224, 224), amp=True)
    timm = {"epoch": 299, "arch": "conv2former_n", "optimizer": {"state": {}, "param_groups": []}, "version": 2}
    if layout == "timm":
        return {**timm, "state_dict": sd, "args": args}
    if layout == "timm_ema":
        assert other is not None
        return {**timm, "state_dict": other, "state_dict_ema": sd, "args": args, "metric": 81.5}
    if layout == "ddp":
        return {f"module.{k}": v for k, v in sd.items()}
    return dict(sd)


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    rows = model.model[:4] if isinstance(model, Model) else model
    outs = []
    with torch.no_grad():
        for row in rows:
            x = row(x)
            outs.append(x)
    return outs


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def refused(model: nn.Module, source: Any, **kw: Any) -> str:
    """The one-line message of a refused load; the model's state must be as before."""
    before = snapshot(model)
    with pytest.raises(UserError) as e:
        load_backbone_weights(model, source, **kw)
    assert "\n" not in str(e.value) and " — " in str(e.value)
    assert unchanged(model, before)
    return str(e.value)


@pytest.fixture(scope="module")
def n_case() -> tuple[dict, dict, dict, torch.Tensor, list[torch.Tensor]]:
    """Conv2Former-n: spec, EMA weights, other (raw) weights, an input and the reference stage outputs of the EMA."""
    spec = resolve_conv2former("n")
    sd, other = official_weights(spec, seed=1), official_weights(spec, seed=2)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    return spec, sd, other, x, reference_stages(sd, x, spec["depths"], spec["kernel_size"])


@pytest.fixture(scope="module")
def _shared_n_model() -> Model:
    return Model(N_YAML).eval()  # built once: a Conv2Former-n Model takes seconds to initialise


@pytest.fixture
def n_model(_shared_n_model: Model) -> Model:
    """The shipped n yaml's Model with its backbone rows zeroed, so no test can pass on another test's load."""
    with torch.no_grad():
        for t in _shared_n_model.model[:4].state_dict().values():
            t.zero_()
    return _shared_n_model


# ---------------------------------------------------------------------------------------------------- acceptance
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", ["custom", "n"])
def test_every_layout_gives_the_reference_stage_outputs(
    size: str, layout: str, n_case, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if size == "n":  # the shipped yaml's Model (rows named model.0 ... model.3)
        spec, sd, other, x, want = n_case
        model = request.getfixturevalue("n_model")
    else:  # bare rows (named 0 ... 3)
        spec = resolve_conv2former(CUSTOM)
        sd, other = official_weights(spec, seed=4), official_weights(spec, seed=5)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
        want = reference_stages(sd, x, spec["depths"], spec["kernel_size"])
        model = our_backbone(spec).eval()
    path = tmp_path / f"conv2former_{size}.pth.tar"
    torch.save(in_layout(layout, sd, other), path)
    head = [p.clone() for p in model.model[4:].parameters()] if size == "n" else []
    report = load_backbone_weights(model, str(path))
    n_backbone = sum(1 for k in sd if not k.startswith(("head.", "pred.")))
    assert report.format == "Conv2Former official" and len(report.loaded) == n_backbone and not report.missing
    assert sorted(report.skipped) == sorted(classifier_shapes(spec["dims"][-1]))
    assert report.entry == {"timm": "state_dict", "timm_ema": "state_dict_ema: EMA, preferred over state_dict"}.get(
        layout, ""
    )
    for fmt in (torch.contiguous_format, torch.channels_last):
        outs = stage_outputs(model.to(memory_format=fmt), x.contiguous(memory_format=fmt))
        diffs = [max_rel_diff(o, w) for o, w in zip(outs, want)]
        assert max(diffs) <= 1e-5, diffs
    assert min(w.abs().max().item() for w in want) > 0.1  # a real signal through every stage
    if head:  # the detection head is untouched
        assert all(torch.equal(a, b) for a, b in zip(head, model.model[4:].parameters()))


def test_stem_batchnorm_statistics_and_layer_scales_are_loaded(n_case, n_model: Model) -> None:
    _, sd, *_ = n_case
    model = n_model
    load_backbone_weights(model, sd)
    stem, bn = model.model[0].downsample, sd["downsample_layers.0.5.running_var"]
    assert torch.equal(stem[5].running_var, bn) and not torch.equal(bn, torch.ones_like(bn))
    assert torch.equal(stem[2].running_mean, sd["downsample_layers.0.2.running_mean"])
    assert int(stem[2].num_batches_tracked) == 7
    assert torch.equal(model.model[2].blocks[7].layer_scale_2, sd["stages.2.7.layer_scale_2"])


def test_ema_choice(n_case, n_model: Model, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Both present: the EMA unless ema=False, said in the report and the log; ema=True needs an EMA entry."""
    _, sd, other, *_ = n_case
    path = tmp_path / "both.pth.tar"
    torch.save(in_layout("timm_ema", sd, other), path)
    model = n_model
    load_backbone_weights(model, path)
    w = model.model[3].blocks[1].attn.att[2].weight
    assert torch.equal(w, sd["stages.3.1.attn.att.2.weight"]) and not torch.equal(
        w, other["stages.3.1.attn.att.2.weight"]
    )
    assert "[state_dict_ema: EMA, preferred over state_dict]" in caplog.text
    report = load_backbone_weights(model, path, ema=False)
    assert (
        torch.equal(w, other["stages.3.1.attn.att.2.weight"])
        and report.entry == "state_dict: not the EMA (state_dict_ema)"
    )
    assert load_backbone_weights(model, path, ema=True).entry.startswith("state_dict_ema")
    only_raw = tmp_path / "raw.pth.tar"
    torch.save(in_layout("timm", sd), only_raw)
    msg = refused(model, only_raw, ema=True)
    assert msg.startswith(f"{only_raw} holds no EMA weights (entries: ['state_dict'])") and "drop ema=True" in msg


@pytest.mark.parametrize("size", SIZES)
def test_every_official_key_of_every_size_finds_its_place(size: str) -> None:
    """Shapes only (meta device): the whole official state dict of each size, classifier included, in a DDP-prefixed
    timm EMA file layout, maps onto the shipped yaml's rows with nothing missing or left over."""
    spec = resolve_conv2former(size)
    sd = official_weights(spec, device="meta")
    with torch.device("meta"):
        model = Model(ROOT / "models" / f"yolov5_Conv2Former-{size}.yaml")
    obj = in_layout("timm_ema", {f"module.{k}": v for k, v in sd.items()}, other={})
    report = load_backbone_weights(model, obj)
    rows = {k for k in model.state_dict() if k.split(".")[1] in ("0", "1", "2", "3")}
    assert set(report.loaded) == rows and not report.missing and len(report.skipped) == 6
    assert len(rows) == len(sd) - 6  # every backbone key, BatchNorm statistics included


# ------------------------------------------------------------------------------------------------------ refusals
def _other_model(size: str, n_model: Model) -> tuple[nn.Module, str]:
    """A real model of another shape than `size` (for the before/after state comparison) and its description."""
    if size != "n":
        return n_model, "Conv2Former-n (kernel 7)"
    return our_backbone(
        resolve_conv2former(CUSTOM)
    ), "Conv2Former(kernel 5, depths [1, 2, 1, 1], dims [16, 24, 32, 48])"


@pytest.mark.parametrize("size", SIZES)
def test_size_and_kernel_mismatch_is_refused_naming_both(size: str, n_model: Model) -> None:
    spec = resolve_conv2former(size)
    model, desc = _other_model(size, n_model)
    msg = refused(model, official_weights(spec, device="meta"))
    assert msg.startswith(
        f"state dict holds Conv2Former-{size} (kernel {spec['kernel_size']}) weights but the model "
        f"backbone is {desc} — use models/yolov5_Conv2Former-{size}.yaml"
    )


def test_kernel_mismatch_is_refused_naming_both(n_model: Model) -> None:
    n = n_model
    old_n = official_weights(resolve_conv2former("n"), device="meta", kernel=11)  # the first code release's n
    assert refused(n, old_n) == (
        "state dict holds Conv2Former-n (kernel 11) weights but the model backbone is Conv2Former-n (kernel 7) — "
        "set 'conv2former: {size: n, kernel_size: 11}' in the model yaml"
    )
    with torch.device("meta"):
        b = Model(ROOT / "models" / "yolov5_Conv2Former-b.yaml")
    with pytest.raises(
        UserError,
        match=r"holds Conv2Former-b_22k \(kernel 7\) weights but the model backbone is "
        r"Conv2Former-b \(kernel 11\) — use models/yolov5_Conv2Former-b_22k.yaml",
    ):
        load_backbone_weights(b, official_weights(resolve_conv2former("b_22k"), device="meta"))


def test_family_mismatch_is_refused_naming_both(n_model: Model) -> None:
    n = n_model
    atto = random_official_v2([2, 2, 6, 2], [40, 80, 160, 320])
    assert refused(n, atto) == (
        "state dict holds ConvNeXtV2-atto weights but the model backbone is Conv2Former-n (kernel 7) — "
        "use the ConvNeXt yaml of the weights' size"
    )
    convnext = Model(micro_cfg())
    msg = refused(convnext, official_weights(resolve_conv2former("n"), device="meta"))
    assert msg.startswith("state dict holds Conv2Former-n (kernel 7) weights but the model backbone is ConvNeXt(")
    assert msg.endswith("— use models/yolov5_Conv2Former-n.yaml (or 'conv2former: n' in your yaml)")
    assert "nor Conv2Former_Block" in refused(
        Model("yolov5n.yaml"), official_weights(resolve_conv2former("n"), device="meta")
    )
    assert refused(n, {"conv1.weight": torch.zeros(3)}).startswith("state dict holds no Conv2Former weights")


def test_one_bad_key_refuses_the_whole_file() -> None:
    """Shape and name checks run on every key before the first copy: a bad last key leaves even the stem untouched."""
    spec = resolve_conv2former(CUSTOM)
    model = our_backbone(spec)
    sd = official_weights(spec)
    last = "stages.3.0.mlp.fc2.bias"
    assert list(sd)[-7] == last  # after it: the classifier only
    bad = dict(sd) | {last: torch.zeros(47)}
    assert refused(model, bad) == (
        "state dict: 3.blocks.0.mlp.fc2.bias has shape [47] but the model expects [48] — weights and model yaml are "
        "different Conv2Former sizes"
    )
    msg = refused(model, dict(sd) | {"norm.weight": torch.ones(48), "head_dist.weight": torch.ones(1)})
    assert msg.startswith("state dict: 2 key(s) that are not part of an official Conv2Former, e.g. ['norm.weight', ")
    msg = refused(model, dict(sd) | {"stages.1.1.attn.extra": torch.ones(1)})
    assert msg.startswith("state dict: 1.blocks.1.attn.extra has no place in the model's Conv2Former backbone")


class RunsCode:
    """Pickles as a call of pathlib.Path.touch: loading it the ordinary way would create the marker file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def test_truncated_foreign_and_hostile_files_are_one_line(tmp_path: Path) -> None:
    spec = resolve_conv2former(CUSTOM)
    model = our_backbone(spec)
    good = tmp_path / "good.pth.tar"
    torch.save(in_layout("timm", official_weights(spec)), good)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert refused(model, cut).startswith(f"cannot read weights file {cut}: ")
    text = tmp_path / "notes.pth.tar"
    text.write_text("conv2former_t weights: see the README\n")
    assert refused(model, text).startswith(f"cannot read weights file {text}: ")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": official_weights(spec), "args": RunsCode(marker)}, evil)
    assert "refused by the safe loader: Unsupported global" in refused(model, evil) and not marker.exists()
    msg = refused(model, "conv2former_t_22k.pth.tar")  # a name, not a file: there are no download names
    assert msg == (
        "conv2former_t_22k.pth.tar is not a file — Conv2Former weights have no download names: download the "
        "checkpoint (e.g. conv2former_t.pth.tar) from the links in the README of github.com/HVision-NKU/Conv2Former "
        "and pass its path"
    )


def test_train_cli_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)  # a zip header, then garbage: a cut download
    project = tmp_path / "runs"
    cmd = [sys.executable, "train.py", "--backbone-weights", str(bad), "--cfg", str(N_YAML), "--epochs", "1"]
    cmd += ["--imgsz", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--project", str(project)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: cannot read weights file {bad}: "), r.stderr
    assert not list(project.rglob("*.pt"))  # refused before any training


def test_backbone_ema_flag_needs_backbone_weights(tmp_path: Path) -> None:
    for value, flag in ((True, "--backbone-ema"), (False, "--no-backbone-ema")):
        with pytest.raises(UserError, match=rf"^{flag}: given without --backbone-weights — .* or drop {flag}$"):
            train.run(backbone_ema=value, project=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
    assert train.parse_opt(["--no-backbone-ema"]).backbone_ema is False
    assert train.parse_opt([]).backbone_ema is None


def test_convnext_training_files_follow_the_same_ema_rule() -> None:
    """ConvNeXt's own training files hold `model` and `model_ema`: the EMA unless ema=False, as for Conv2Former."""
    model = Model(micro_cfg(version=2))
    raw = random_official_v2([1, 1, 1, 1], [16, 32, 64, 128])
    avg = {k: v + 0.5 for k, v in raw.items()}  # the EMA: other values
    dw = model.model[1].blocks[0].dwconv.weight
    report = load_backbone_weights(model, {"model": raw, "model_ema": avg, "epoch": 3})
    assert torch.equal(dw, avg["stages.1.0.dwconv.weight"]) and report.entry == "model_ema: EMA, preferred over model"
    load_backbone_weights(model, {"model": raw, "model_ema": avg}, ema=False)
    assert torch.equal(dw, raw["stages.1.0.dwconv.weight"])
