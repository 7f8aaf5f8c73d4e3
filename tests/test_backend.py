"""DetectBackend: one interface over .pt / .torchscript / .onnx, metadata round trip, clear errors for bad files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.fixtures_models import MICRO_NAMES
from utils.core.errors import UserError
from utils.inference.backend import METADATA_FILE, DetectBackend, export_metadata, parse_metadata, round_imgsz


def test_pt_backend_matches_model_eval_forward(micro_pt: Path) -> None:
    from models.checkpoint import load_checkpoint_model

    be = DetectBackend(micro_pt)
    model = load_checkpoint_model(micro_pt)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)[0]
        out = be(x)
    assert be.pt and be.model is not None and not be.fp16
    assert be.stride == int(model.stride.max()) and be.names == MICRO_NAMES and be.nc == 2
    assert out.shape == ref.shape and out.shape[0] == 2 and out.shape[2] == 5 + 2
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # fused conv+bn vs unfused: rounding only


def test_pt_backend_runs_channels_last_and_keeps_host_memory(micro_pt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .pt runs with NHWC weights and, on a CPU, the process keeps freed memory (both: docs/benchmarks.md)."""
    import utils.inference.backend as backend

    calls: list[int] = []
    monkeypatch.setattr(backend, "keep_freed_memory", lambda: calls.append(1) or True)
    be = DetectBackend(micro_pt)
    # k x k kernels with more than one input channel per group: the ones whose NHWC strides differ from NCHW's
    spatial = [
        m.weight
        for m in be.model.modules()
        if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1 and m.kernel_size[0] > 1
    ]
    assert spatial and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in spatial
    )
    assert calls == [1]


def test_half_on_cpu_falls_back_to_float(micro_pt: Path, caplog: pytest.LogCaptureFixture) -> None:
    be = DetectBackend(micro_pt, device="cpu", fp16=True)
    assert be.fp16 is False and be(torch.rand(1, 3, 64, 64)).dtype == torch.float32


def test_metadata_round_trip() -> None:
    meta = export_metadata(32, {0: "a b", 3: "c"})
    assert all(isinstance(v, str) for v in meta.values())  # ONNX metadata_props hold strings only
    assert parse_metadata(meta, Path("x.onnx")) == (32, {0: "a b", 3: "c"})
    with pytest.raises(UserError, match="no stride/names metadata"):
        parse_metadata({"stride": "32"}, Path("x.onnx"))


def test_metadata_is_yolov5s_form_and_older_json_still_reads() -> None:
    """YOLOv5's DetectMultiBackend does int(meta["stride"]) and eval(meta["names"]), then indexes names by int."""
    meta = export_metadata(32, {0: "circle", 1: "it's"})
    names = ast.literal_eval(meta["names"])  # what YOLOv5 gets (it uses eval; a literal is the same here)
    assert int(meta["stride"]) == 32 and names[0] == "circle" and names[1] == "it's"
    assert parse_metadata({"stride": "32", "names": '{"0": "circle", "1": "square"}'}, Path("old.onnx")) == (
        32,
        {0: "circle", 1: "square"},
    )
    with pytest.raises(UserError, match="no stride/names metadata"):  # never executed: a literal or nothing
        parse_metadata({"stride": "32", "names": "__import__('os').system('echo PWNED')"}, Path("x.onnx"))


def test_round_imgsz_rounds_up_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert round_imgsz(640, 32) == (640, 640)
    assert round_imgsz([100], 32) == (128, 128)
    assert round_imgsz((70, 64), 32) == (96, 64)
    assert "multiple of the max stride 32" in caplog.text
    with pytest.raises(UserError):
        round_imgsz([0], 32)
    with pytest.raises(UserError):
        round_imgsz([1, 2, 3], 32)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("w.h5", b"x", "unsupported format"),
        ("missing.pt", None, "not found"),
        ("junk.pt", b"not a checkpoint", "not a readable checkpoint"),
        ("junk.torchscript", b"garbage", "not a loadable TorchScript"),
    ],
)
def test_bad_weights_are_user_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    f = tmp_path / name
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(UserError, match=message):
        DetectBackend(f)


def test_bad_onnx_is_user_error(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    f = tmp_path / "junk.onnx"
    f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a loadable ONNX"):
        DetectBackend(f)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace deprecation notice
def test_torchscript_without_metadata_is_user_error(tmp_path: Path) -> None:
    f = tmp_path / "plain.torchscript"
    torch.jit.trace(torch.nn.Conv2d(3, 7, 1), torch.rand(1, 3, 8, 8)).save(str(f))
    with pytest.raises(UserError, match="no stride/names metadata"):
        DetectBackend(f)
    meta = export_metadata(8, {0: "x", 1: "y"})
    torch.jit.trace(torch.nn.Conv2d(3, 7, 1), torch.rand(1, 3, 8, 8)).save(
        str(f), _extra_files={METADATA_FILE: json.dumps(meta)}
    )
    be = DetectBackend(f)
    assert (be.stride, be.names, be.nc, be.pt, be.jit) == (8, {0: "x", 1: "y"}, 2, False, True)
