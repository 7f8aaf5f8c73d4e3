"""Paddle .pdparams ConvNeXt weights: the restricted numpy unpickler (utils/core/safe_pickle.py) and
load_backbone_weights on files built here the way paddle.save writes them — numerically equal to the same weights in
the official layout and to a functional reference driven by the Paddle arrays; hostile pickles refused, nothing run."""

from __future__ import annotations

import os
import pickle
import posix
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from models.pretrained import load_backbone_weights
from models.yolo import Model
from tests.fixtures_models import micro_cfg
from utils.core.errors import UserError
from utils.core.safe_pickle import load_array_pickle

ROOT = Path(__file__).resolve().parents[1]
NAME_TABLE = "StructuredToParameterName@@"
CLASSIFIER = ["head.bias", "head.weight", "norm.bias", "norm.weight"]


# ------------------------------------------------------------------------------------------ files as Paddle saves them
def paddle_convnext(depths: list[int], dims: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random PaddleClas ConvNeXt weights: facebookresearch names, Linear weights [in, out], float32. Layer scales,
    norms and biases far from their init (gamma 1e-6 would hide every block behind its residual)."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    sd = {
        "downsample_layers.0.0.weight": r(dims[0], 3, 4, 4, scale=0.3),
        "downsample_layers.0.0.bias": r(dims[0]),
        "downsample_layers.0.1.weight": 1 + r(dims[0]),
        "downsample_layers.0.1.bias": r(dims[0]),
    }
    for s in range(1, 4):
        sd[f"downsample_layers.{s}.0.weight"] = 1 + r(dims[s - 1])
        sd[f"downsample_layers.{s}.0.bias"] = r(dims[s - 1])
        sd[f"downsample_layers.{s}.1.weight"] = r(dims[s], dims[s - 1], 2, 2, scale=(dims[s - 1] * 4) ** -0.5)
        sd[f"downsample_layers.{s}.1.bias"] = r(dims[s])
    for s, (n, d) in enumerate(zip(depths, dims)):
        for j in range(n):
            b = f"stages.{s}.{j}"
            sd[f"{b}.dwconv.weight"] = r(d, 1, 7, 7, scale=0.15)
            sd[f"{b}.dwconv.bias"] = r(d)
            sd[f"{b}.norm.weight"] = 1 + r(d)
            sd[f"{b}.norm.bias"] = r(d)
            sd[f"{b}.pwconv1.weight"] = r(d, 4 * d, scale=d**-0.5)  # paddle.nn.Linear: [in, out]
            sd[f"{b}.pwconv1.bias"] = r(4 * d)
            sd[f"{b}.pwconv2.weight"] = r(4 * d, d, scale=(4 * d) ** -0.5)
            sd[f"{b}.pwconv2.bias"] = r(d)
            sd[f"{b}.gamma"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
    sd["norm.weight"], sd["norm.bias"] = 1 + r(dims[3]), r(dims[3])
    sd["head.weight"], sd["head.bias"] = r(dims[3], 1000), r(1000)  # [in, out] too
    return sd


def save_pdparams(path: Path, sd: dict[str, np.ndarray], protocol: int) -> Path:
    """What paddle.save(layer.state_dict(), path) writes: one pickle of {name: ndarray} plus the name table."""
    obj: dict[str, Any] = dict(sd)
    obj[NAME_TABLE] = {k: f"param_{i}.w_0" for i, k in enumerate(sd)}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


class PaddleTensor:
    """Pickles like a paddle Tensor inside other objects (paddle.save's reduce_varbase): tuple((name, ndarray))."""

    def __init__(self, name: str, value: np.ndarray) -> None:
        self.name, self.value = name, value

    def __reduce__(self) -> tuple:
        return tuple, ((self.name, self.value),)


def to_official(sd: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The same weights in facebookresearch's PyTorch layout (Linear weights [out, in])."""
    linear = ("pwconv1.weight", "pwconv2.weight", "head.weight")
    return {k: torch.from_numpy(v.T.copy() if k.endswith(linear) else v.copy()) for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------- reference forward
def reference_stages(sd: dict[str, np.ndarray], x: torch.Tensor, depths: list[int]) -> list[torch.Tensor]:
    """ConvNeXt written from the equations, in float64, straight from the Paddle arrays: Linear is x @ W + b with
    W [in, out] as Paddle computes it, LayerNorm by explicit mean / variance, GELU by erf."""
    p = {k: torch.from_numpy(v).double() for k, v in sd.items()}

    def ln(t: torch.Tensor, pre: str, dim: int) -> torch.Tensor:
        u = t.mean(dim, keepdim=True)
        var = (t - u).pow(2).mean(dim, keepdim=True)
        shape = [-1, 1, 1] if dim == 1 else [-1]
        return (t - u) / torch.sqrt(var + 1e-6) * p[pre + ".weight"].view(shape) + p[pre + ".bias"].view(shape)

    def gelu(t: torch.Tensor) -> torch.Tensor:
        return 0.5 * t * (1 + torch.erf(t / 2**0.5))

    outs, x = [], x.double()
    for s in range(4):
        d = f"downsample_layers.{s}"
        if s == 0:
            x = ln(F.conv2d(x, p[f"{d}.0.weight"], p[f"{d}.0.bias"], stride=4), f"{d}.1", 1)
        else:
            x = F.conv2d(ln(x, f"{d}.0", 1), p[f"{d}.1.weight"], p[f"{d}.1.bias"], stride=2)
        for j in range(depths[s]):
            b = f"stages.{s}.{j}"
            y = F.conv2d(x, p[f"{b}.dwconv.weight"], p[f"{b}.dwconv.bias"], padding=3, groups=x.shape[1])
            y = ln(y.permute(0, 2, 3, 1), f"{b}.norm", -1)
            y = gelu(y @ p[f"{b}.pwconv1.weight"] + p[f"{b}.pwconv1.bias"])
            y = (y @ p[f"{b}.pwconv2.weight"] + p[f"{b}.pwconv2.bias"]) * p[f"{b}.gamma"]
            x = x + y.permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def backbone_stages(model: Model, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        for i in range(model.backbone_rows):
            x = model.model[i](x)
            outs.append(x)
    return outs


def max_rel_diff(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    assert [o.shape for o in ours] == [r.shape for r in ref]
    return max(float((o.double() - r).abs().max() / r.abs().max()) for o, r in zip(ours, ref))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------- equivalence
SIZES = {  # name -> (model cfg, depths, dims)
    "micro": (micro_cfg(), [1, 1, 1, 1], [16, 32, 64, 128]),
    "atto": ("yolov5_ConvNeXt-atto.yaml", [2, 2, 6, 2], [40, 80, 160, 320]),
}


@pytest.mark.parametrize("size, protocol", [("micro", 2), ("micro", 4), ("atto", 2)])
def test_pdparams_equal_official_file_and_reference(size: str, protocol: int, tmp_path: Path) -> None:
    cfg, depths, dims = SIZES[size]
    sd = paddle_convnext(depths, dims, seed=protocol)
    pd_path = save_pdparams(tmp_path / "ConvNeXt_pretrained.pdparams", sd, protocol)
    pth_path = tmp_path / "convnext_1k_224_ema.pth"
    torch.save({"model": to_official(sd)}, pth_path)

    from_paddle, from_torch = Model(cfg).eval(), Model(cfg).eval()
    report = load_backbone_weights(from_paddle, pd_path)
    official = load_backbone_weights(from_torch, pth_path)
    n_backbone = sum(1 for _ in from_paddle.model[: from_paddle.backbone_rows].parameters())
    assert report.format == "paddle" and official.format == "official"
    assert len(report.loaded) == n_backbone == len(sd) - 4 and not report.missing
    assert sorted(report.skipped) == CLASSIFIER  # the name table is no weight and is not reported as one
    assert str(report).endswith(f"(paddle format): {n_backbone} loaded, 4 skipped (classifier), 0 missing")

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours, theirs = backbone_stages(from_paddle, x), backbone_stages(from_torch, x)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))  # the very same numbers as the PyTorch file
    ref = reference_stages(sd, x, depths)
    assert max_rel_diff(ours, ref) <= 1e-5
    assert float(ref[-1].abs().mean()) > 0.1  # the blocks contribute: a wrong map would not stay within 1e-5
    assert (
        max_rel_diff(ours, reference_stages({**sd, "stages.0.0.gamma": 0 * sd["stages.0.0.gamma"]}, x, depths)) > 1e-3
    )


def test_paddle_tensor_tuples_renamed_file_and_wrapped_dict(tmp_path: Path) -> None:
    """paddle.save of a dict that is not a plain state dict pickles each Tensor as (name, ndarray); a renamed file is
    still recognised by its content; a torch zip named .pdparams still goes to torch.load."""
    _, depths, dims = SIZES["micro"]
    sd = paddle_convnext(depths, dims, seed=7)
    path = tmp_path / "model_final.bin"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: PaddleTensor(f"t_{i}", v) for i, (k, v) in enumerate(sd.items())}, "epoch": 3}, f, 2)
    model = Model(micro_cfg()).eval()
    assert load_backbone_weights(model, path).format == "paddle"
    x = torch.randn(1, 3, 64, 64)
    assert max_rel_diff(backbone_stages(model, x), reference_stages(sd, x, depths)) <= 1e-5

    zipped = tmp_path / "really_torch.pdparams"
    torch.save({"model": to_official(sd)}, zipped)
    assert load_backbone_weights(Model(micro_cfg()), zipped).format == "official"


def test_pytorch_layout_in_a_pdparams_is_refused_before_copying(tmp_path: Path) -> None:
    _, depths, dims = SIZES["micro"]
    torch_layout = {k: v.numpy() for k, v in to_official(paddle_convnext(depths, dims)).items()}
    path = save_pdparams(tmp_path / "torch_layout.pdparams", torch_layout, 4)
    model = Model(micro_cfg())
    before = _state(model)
    with pytest.raises(UserError, match=r"pwconv1\.weight has shape \[16, 64\] but the model expects \[64, 16\]"):
        load_backbone_weights(model, path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------------------------------------- the core reader
@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_safe_pickle_round_trips_numeric_arrays(protocol: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal(4).astype(np.float16),
        "f64_fortran": np.asfortranarray(rng.standard_normal((2, 3))),
        "i64_big_endian": np.arange(6, dtype=">i8").reshape(2, 3),
        "u16_bf16_bits": np.array([16256, 49024], dtype=np.uint16),  # how Paddle hands bfloat16 to numpy
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), np.float32),
    }
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps({"arrays": arrays, "meta": [1, 2.5, "x", None, np.float32(0.25)]}, protocol))
    got = load_array_pickle(path, "todo")
    assert got["meta"] == [1, 2.5, "x", None, 0.25] and type(got["meta"][4]) is np.float32
    for k, a in arrays.items():
        b = got["arrays"][k]
        assert b.dtype == a.dtype.newbyteorder("=") and b.shape == a.shape and np.array_equal(a, b), k
        assert b.flags.writeable and b.dtype.isnative


# ------------------------------------------------------------------------------------------------------ refusals
class Payload:
    """An object whose unpickling calls fn(*args): what a malicious file does."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args


class SubprocessThing:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return subprocess.check_call, (["touch", str(self.marker)],)


class PlainThing:  # a harmless class instance: still code the reader would have to import
    def __init__(self) -> None:
        self.weights = np.ones(2)


def _os_system_named_os(monkeypatch: pytest.MonkeyPatch) -> Any:
    """os.system pickles as posix.system; a stand-in registered as os.system (only while dumping) is written as
    'os system', which a normal unpickler resolves to the real os.system."""
    real = os.system

    def system(cmd: str) -> int:
        return real(cmd)

    system.__module__, system.__qualname__ = "os", "system"
    monkeypatch.setattr(os, "system", system)
    return system


def _hostile(case: str, marker: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if case == "os.system":
        return Payload(_os_system_named_os(monkeypatch), f"touch {marker}")
    return {
        "posix.system": Payload(posix.system, f"touch {marker}"),
        "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.check_call": SubprocessThing(marker),
        f"{__name__}.PlainThing": PlainThing(),
    }[case]


RUNS_CODE = ["os.system", "posix.system", "builtins.eval", "subprocess.check_call"]


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("case", [*RUNS_CODE, f"{__name__}.PlainThing"])
def test_hostile_pdparams_is_refused_and_nothing_runs(
    case: str, protocol: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    _, depths, dims = SIZES["micro"]
    sd: dict[str, Any] = dict(paddle_convnext(depths, dims))
    with monkeypatch.context() as mp:
        sd["stages.0.0.gamma"] = {"nested": [_hostile(case, marker, mp)]}  # deep inside, after real arrays
        path = save_pdparams(tmp_path / "evil.pdparams", sd, protocol)
    model = Model(micro_cfg())
    before = _state(model)
    with pytest.raises(UserError) as e:
        load_backbone_weights(model, path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: refused to load — it pickles {case}, which is not a numpy")
    assert not marker.exists()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    if case in RUNS_CODE:  # the payload is live: a plain pickle.load of the same file does run it
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


@pytest.mark.parametrize(
    "data, refusal",
    [
        (b"\x80\x02c_codecs\nencode\n}b.", "writes state onto _codecs.encode"),  # BUILD aimed at an allowed function
        (b"\x80\x02cnumpy\nndarray\n}b.", "writes state onto numpy.ndarray"),
        (pickle.dumps({"x": np.array([1, "a"], dtype=object)}, 2), "builds a numpy dtype 'O8'"),
        (pickle.dumps({"x": np.zeros(2, [("a", "f4")])}, 4), "builds a numpy dtype 'V4'"),
        (pickle.dumps({"x": np.ma.masked_array([1.0])}, 2), "pickles numpy.ma.core._mareconstruct"),
        (b"\x80\x02cnumpy\ndtype\n.", "holds a bare numpy.dtype as data"),
    ],
    ids=["build-on-function", "build-on-ndarray", "object-array", "structured-array", "masked-array", "bare-global"],
)
def test_crafted_numpy_pickles_are_refused(data: bytes, refusal: str, tmp_path: Path) -> None:
    path = tmp_path / "crafted.pdparams"
    path.write_bytes(data)
    want = rf"^{re.escape(str(path))}: refused to load — it {re.escape(refusal)}.* — pass a ConvNeXt \.pdparams"
    with pytest.raises(UserError, match=want):
        load_backbone_weights(Model(micro_cfg()), path)


def test_truncated_and_empty_pdparams_are_one_line(tmp_path: Path) -> None:
    _, depths, dims = SIZES["micro"]
    whole = save_pdparams(tmp_path / "whole.pdparams", paddle_convnext(depths, dims), 4).read_bytes()
    for name, data in [("cut.pdparams", whole[: len(whole) // 2]), ("empty.pdparams", b"")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UserError) as e:
            load_backbone_weights(Model(micro_cfg()), path)
        assert "\n" not in str(e.value)
        assert str(e.value).startswith(f"{path} is not a readable pickle (")
    foreign = save_pdparams(tmp_path / "resnet.pdparams", {"conv1.weight": np.zeros((8, 3, 7, 7), np.float32)}, 4)
    with pytest.raises(UserError, match="unknown key format"):
        load_backbone_weights(Model(micro_cfg()), foreign)


def test_train_cli_refuses_hostile_pdparams_before_training(
    shapes_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    with monkeypatch.context() as mp:
        evil = save_pdparams(tmp_path / "evil.pdparams", {"x": _hostile("os.system", marker, mp)}, 2)
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(yaml.safe_dump(micro_cfg()))
    r = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--cfg", str(cfg), "--data", str(shapes_yaml)]
        + ["--backbone-weights", str(evil), "--epochs", "1", "--device", "cpu", "--project", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=180,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not marker.exists()
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ERROR: {evil}: refused to load — it pickles os.system"), r.stderr
    assert not list((tmp_path / "runs").glob("*/weights/*.pt"))  # no training step, no checkpoint
