"""export.py: TorchScript and ONNX files that reproduce the PyTorch output and carry stride/names metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export
from tests.fixtures_models import MICRO_NAMES, save_micro_checkpoint
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.inference.backend import DetectBackend


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The micro checkpoint exported to both formats at 64x96 (ONNX with dynamic axes)."""
    pytest.importorskip("onnx")
    pt = save_micro_checkpoint(tmp_path_factory.mktemp("export") / "micro.pt", seed=1)
    files = export.run(weights=pt, imgsz=(64, 96), include=["torchscript", "onnx"], dynamic=True)
    return {"pt": pt, **files}


def test_files_written_next_to_weights(exported: dict[str, Path]) -> None:
    assert exported["torchscript"] == exported["pt"].with_suffix(".torchscript")
    assert exported["onnx"] == exported["pt"].with_suffix(".onnx")
    assert exported["torchscript"].stat().st_size > 1000 and exported["onnx"].stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_output_equals_pytorch(exported: dict[str, Path], fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    ref, be = DetectBackend(exported["pt"]), DetectBackend(exported[fmt])
    with torch.no_grad():
        want, got = ref(x), be(x)
    assert (be.stride, be.names, be.nc, be.pt) == (ref.stride, MICRO_NAMES, 2, False)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-4


def test_dynamic_onnx_runs_other_sizes(exported: dict[str, Path]) -> None:
    pytest.importorskip("onnxruntime")
    x = torch.rand(2, 3, 96, 64)  # other batch and shape than the export
    with torch.no_grad():
        want, got = DetectBackend(exported["pt"])(x), DetectBackend(exported["onnx"])(x)
    assert got.shape == want.shape and (got - want).abs().max().item() < 1e-4


def test_static_onnx_rejects_other_size_and_chunks_batches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pt = save_micro_checkpoint(tmp_path / "s.pt", seed=2)
    f = export.run(weights=pt, imgsz=64, include=["onnx"])["onnx"]
    be, ref = DetectBackend(f), DetectBackend(pt)
    assert be.static_shape == (1, 3, 64, 64)
    x = torch.rand(3, 3, 64, 64)  # batch 3 on a batch-1 file: run as 3 chunks
    with torch.no_grad():
        assert (be(x) - ref(x)).abs().max().item() < 1e-4
    with pytest.raises(UserError, match="exported for input"):
        be(torch.rand(1, 3, 96, 64))


def test_bad_flags_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown format"):
        export.run(weights=tmp_path / "x.pt", include=["tflite"])
    with pytest.raises(UserError, match="needs a CUDA device"):
        export.run(weights=tmp_path / "x.pt", include=["onnx"], half=True, device="cpu")
    with pytest.raises(UserError, match="not found"):
        export.run(weights=tmp_path / "missing.pt", include=["onnx"])


def test_cli_bad_weights_one_line_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    p = subprocess.run(
        [sys.executable, str(ROOT / "export.py"), "--weights", str(junk), "--include", "onnx"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().startswith("ERROR:") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_dnn_runs_the_onnx_file_like_onnxruntime(tmp_path: Path) -> None:
    """--dnn: OpenCV DNN on a static ONNX export gives onnxruntime's outputs within 1e-3 (both fp32; OpenCV fuses
    and reorders some ops), with the same metadata."""
    pt = save_micro_checkpoint(tmp_path / "micro.pt", seed=1)
    f = export.run(weights=pt, imgsz=(64, 96), include=["onnx"])["onnx"]
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 96)
    ort, dnn = DetectBackend(f), DetectBackend(f, dnn=True)
    with torch.no_grad():
        want, got = ort(x), dnn(x)
    assert (dnn.stride, dnn.names, dnn.static_shape) == (ort.stride, MICRO_NAMES, (1, 3, 64, 96))
    assert got.shape == want.shape and (got - want).abs().max().item() < 1e-3


def test_dnn_errors_are_one_line(tmp_path: Path) -> None:
    pt = save_micro_checkpoint(tmp_path / "micro.pt", seed=1)
    with pytest.raises(UserError, match="--dnn runs .onnx files"):
        DetectBackend(pt, dnn=True)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a graph")
    with pytest.raises(UserError, match="DNN cannot read") as e:
        DetectBackend(bad, dnn=True)
    assert "\n" not in str(e.value)


def test_onnx_head_nodes_are_the_detect_layer(exported: dict[str, Path]) -> None:
    """benchmarks/ort_int8.py keeps these in float: every node the walk back from the outputs finds belongs to the
    Detect layer (the last module, model.18 in the micro model), and its three output convolutions are among them;
    the network's own convolutions (model.17) are not."""
    onnx = pytest.importorskip("onnx")
    from benchmarks.ort_int8 import onnx_head_nodes

    model = onnx.load(str(exported["onnx"]))
    head = onnx_head_nodes(model)
    assert head and all(n.startswith("/model/model.18/") for n in head)
    convs = sorted(n.name for n in model.graph.node if n.op_type == "Conv" and n.name in head)
    assert convs == [f"/model/model.18/m.{i}/Conv" for i in range(3)]
