"""OpenVINO export and inference (export.py --include openvino, DetectBackend on .xml / *_openvino_model/) and the
--include pt converter: outputs equal to PyTorch, metadata round trip, detect/val equal to the .pt, clear errors."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import detect
import export
import val
from tests.fixtures_models import CKPT_KEYS, MICRO_NAMES, save_micro_checkpoint
from tests.fixtures_train import FIXTURE_IMGSZ
from utils.core.errors import UserError
from utils.core.files import yaml_load, yaml_save
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import create_dataloader
from utils.inference.api import tta_forward
from utils.inference.backend import DetectBackend

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")

SIZE = (64, 96)  # export size of the micro model: not square, so h and w cannot be swapped unnoticed
RECORD_KEYS = {"yaml", "state_dict", "nc", "names", "stride"}


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference, relative to the value for pixel coordinates (> 1) and absolute for scores (<= 1)."""
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()


def f16_constants(xml: Path) -> int:
    """Number of fp16 weight constants in an OpenVINO IR (0 for an fp32 export)."""
    model = ov.Core().read_model(str(xml))
    return sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random micro checkpoint exported to OpenVINO (fixed shape 1x3x64x96, fp32) and to our plain .pt."""
    pt = save_micro_checkpoint(tmp_path_factory.mktemp("openvino") / "micro.pt", seed=1)
    return {"src": pt, **export.run(weights=pt, imgsz=SIZE, include=["openvino", "pt"])}


@pytest.fixture(scope="module")
def dynamic_half(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of model exported with --dynamic --half on the CPU (fp16 weights, any input shape)."""
    pt = save_micro_checkpoint(tmp_path_factory.mktemp("openvino_dyn") / "dyn.pt", seed=2)
    return {
        "src": pt,
        **export.run(weights=pt, imgsz=SIZE, include=["openvino"], dynamic=True, half=True, device="cpu"),
    }


def test_folder_layout_and_fp32_weights(exported: dict[str, Path]) -> None:
    folder = exported["openvino"]
    assert folder == exported["src"].parent / "micro_openvino_model"
    assert sorted(p.name for p in folder.iterdir()) == ["micro.bin", "micro.xml", "micro.yaml"]  # YOLOv5's layout
    assert yaml_load(folder / "micro.yaml") == {"stride": 32, "names": MICRO_NAMES}
    assert f16_constants(folder / "micro.xml") == 0  # openvino.save_model would compress to fp16 by default
    n_params = sum(v.numel() for v in torch.load(exported["src"], weights_only=True)["model"]["state_dict"].values())
    assert (folder / "micro.bin").stat().st_size >= 4 * n_params * 0.9  # 4 bytes per weight (BN folded in)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


@pytest.mark.parametrize("which", ["folder", "xml"])
def test_outputs_match_pytorch(exported: dict[str, Path], which: str) -> None:
    w = exported["openvino"] if which == "folder" else exported["openvino"] / "micro.xml"
    ref, be = DetectBackend(exported["src"]), DetectBackend(w)
    assert be.openvino and not be.pt and be.static_shape == (1, 3, *SIZE)
    assert (be.stride, be.names, be.nc) == (ref.stride, MICRO_NAMES, 2)
    torch.manual_seed(0)
    x = torch.rand(3, 3, *SIZE)  # batch 3 on a batch-1 file: run in 3 chunks
    with torch.no_grad():
        want, got = ref(x), be(x)
    assert got.shape == want.shape == (3, 378, 7) and got.dtype == torch.float32
    assert max_rel_err(got, want) < 1e-4


def test_f32_hint_is_what_keeps_outputs_exact(exported: dict[str, Path]) -> None:
    """Without INFERENCE_PRECISION_HINT f32 a bf16-capable CPU runs the model in bf16: measured 8.5e-5 relative
    error on this random model (scores 1.6e-5, boxes 0.014 px) against 4.3e-7 with the hint."""
    core = ov.Core()
    if core.get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.f32:
        pytest.skip("this CPU's default OpenVINO precision is already f32")
    torch.manual_seed(0)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        want = DetectBackend(exported["src"])(x)
    default = core.compile_model(str(exported["openvino"] / "micro.xml"), "CPU")
    err_default = max_rel_err(torch.from_numpy(default(x.numpy())[0]), want)
    err_ours = max_rel_err(DetectBackend(exported["openvino"])(x), want)
    assert err_default > 20 * err_ours, (err_default, err_ours)


def test_threads_reach_the_runtime(exported: dict[str, Path]) -> None:
    """benchmarks/formats.py --threads: OpenVINO gets the count (it caps it at the cores; by default it uses them)."""

    def used(threads: int | None) -> int:
        return int(DetectBackend(exported["openvino"], threads=threads).session.get_property("INFERENCE_NUM_THREADS"))

    assert used(1) == 1
    if (os.cpu_count() or 1) > 1:
        assert used(None) > 1


def test_fixed_shape_rejects_other_sizes(exported: dict[str, Path]) -> None:
    be = DetectBackend(exported["openvino"])
    with pytest.raises(UserError, match=r"exported for input \[1, 3, 64, 96\].*--imgsz 64 96"):
        be(torch.rand(1, 3, 96, 64))


def test_dynamic_half_export_runs_any_shape(dynamic_half: dict[str, Path]) -> None:
    xml = dynamic_half["openvino"] / "dyn.xml"
    assert f16_constants(xml) > 0  # --half: weights stored in fp16 (allowed on the CPU for OpenVINO)
    ref, be = DetectBackend(dynamic_half["src"]), DetectBackend(dynamic_half["openvino"])
    assert be.static_shape is None
    x = torch.rand(2, 3, 96, 128)  # another batch and shape than the export
    with torch.no_grad():
        want, got = ref(x), be(x)
        assert got.shape == want.shape == (2, 756, 7)
        assert max_rel_err(got, want) < 2e-2  # fp16 weights, f32 compute
        assert tta_forward(be, x).shape == tta_forward(ref, x).shape  # scaled views need the dynamic shape


def test_metadata_sources(exported: dict[str, Path], tmp_path: Path) -> None:
    """YOLOv5's <stem>.yaml first, then an older export's metadata.yaml, then the .xml's own rt_info (a lone .xml
    pair still runs)."""
    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("micro.xml", "micro.bin"):
        shutil.copy(exported["openvino"] / name, lone / name)
    be = DetectBackend(lone / "micro.xml")
    assert (be.stride, be.names) == (32, MICRO_NAMES)  # from rt_info
    yaml_save(lone / "metadata.yaml", {"stride": 32, "names": {0: "x", 1: "y"}})  # what older exports wrote
    assert DetectBackend(lone / "micro.xml").names == {0: "x", 1: "y"}
    yaml_save(lone / "micro.yaml", {"stride": 32, "names": ["a", "b"]})  # YOLOv5's <stem>.yaml wins
    assert DetectBackend(lone).names == {0: "a", 1: "b"}  # a folder with one .xml
    yaml_save(lone / "micro.yaml", {"stride": "big", "names": {0: "x"}})
    with pytest.raises(UserError, match="stride must be an int"):
        DetectBackend(lone)


def test_bad_openvino_inputs_are_user_errors(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="must hold one OpenVINO .xml model, found 0"):
        DetectBackend(tmp_path)
    (tmp_path / "junk.xml").write_text("<net>")
    (tmp_path / "junk.bin").write_bytes(b"\0" * 8)
    with pytest.raises(UserError, match="not a loadable OpenVINO model"):
        DetectBackend(tmp_path / "junk.xml")
    shutil.copy(exported["openvino"] / "micro.xml", tmp_path / "nobin.xml")
    with pytest.raises(UserError, match="no weights file nobin.bin"):
        DetectBackend(tmp_path / "nobin.xml")


def test_missing_openvino_is_one_line(exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(UserError, match="needs the openvino package — pip install openvino") as e:
        DetectBackend(exported["openvino"])
    assert "\n" not in str(e.value) and str(exported["openvino"] / "micro.xml") in str(e.value)
    with pytest.raises(UserError, match=r"^--include openvino needs the openvino package — pip install openvino"):
        export.run(weights=exported["src"], imgsz=SIZE, include=["openvino"])


def test_failed_folder_write_keeps_old_export(tmp_path: Path) -> None:
    folder = tmp_path / "m_openvino_model"
    folder.mkdir()
    (folder / "m.xml").write_text("old")
    with pytest.raises(UserError, match="no space left"):
        with export._atomic_folder(folder) as tmp:
            (tmp / "m.xml").write_text("new, half written")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (folder / "m.xml").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m_openvino_model"]  # temp folder removed
    with export._atomic_folder(folder) as tmp:
        (tmp / "m.xml").write_text("new")
    assert (folder / "m.xml").read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_include_pt_writes_our_plain_checkpoint(exported: dict[str, Path]) -> None:
    f = exported["pt"]
    assert f == exported["src"].with_name("micro_converted.pt")
    ckpt = torch.load(f, map_location="cpu", weights_only=True)  # plain data only: no code can run
    assert set(ckpt) == CKPT_KEYS and ckpt["epoch"] == -1 and ckpt["ema"] is None and ckpt["optimizer"] is None
    assert set(ckpt["model"]) == RECORD_KEYS and ckpt["model"]["names"] == MICRO_NAMES
    src = torch.load(exported["src"], map_location="cpu", weights_only=True)["model"]["state_dict"]
    got = ckpt["model"]["state_dict"]
    assert got.keys() == src.keys() and all(torch.equal(got[k], src[k]) for k in src)  # unfused, unchanged
    x = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        assert torch.equal(DetectBackend(f)(x), DetectBackend(exported["src"])(x))


def test_half_still_needs_cuda_for_traced_formats(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--half export of onnx needs a CUDA device"):
        export.run(weights=tmp_path / "x.pt", include=["openvino", "onnx"], half=True, device="cpu")


@pytest.fixture(scope="module")
def trained_openvino(trained_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's trained fixture model (a copy) exported to OpenVINO at the fixture size."""
    pt = tmp_path_factory.mktemp("trained_ov") / "best.pt"
    shutil.copy(trained_weights, pt)
    return {"pt": pt, **export.run(weights=pt, imgsz=FIXTURE_IMGSZ, include=["openvino"])}


def test_val_map_equals_pytorch(trained_openvino: dict[str, Path], shapes_yaml: Path, tmp_path: Path) -> None:
    """The same square batches (what val.py gives an exported file) through .pt and OpenVINO: the same mAP."""
    data = check_dataset(shapes_yaml)

    def map5095(weights: Path) -> tuple[float, float]:
        loader = create_dataloader(data["val"], FIXTURE_IMGSZ, 8, 32, pad=0.5, rect=False, workers=0)[0]
        r = val.run(
            data=data,
            weights=weights,
            imgsz=FIXTURE_IMGSZ,
            batch_size=8,
            workers=0,
            device="cpu",
            dataloader=loader,
            project=tmp_path,
            plots=False,
        )[0]
        return r[2], r[3]

    want, got = map5095(trained_openvino["pt"]), map5095(trained_openvino["openvino"])
    assert want[1] > 0.3  # a trained model, so equal numbers mean equal detections
    assert got == pytest.approx(want, abs=1e-4)
    # val.py's own loader for the OpenVINO folder (square letterbox, the fixed export shape) runs without flags
    own = val.run(
        data=data,
        weights=trained_openvino["openvino"],
        imgsz=FIXTURE_IMGSZ,
        batch_size=8,
        workers=0,
        device="cpu",
        project=tmp_path,
        plots=False,
    )[0]
    assert own[3] == pytest.approx(want[1], abs=1e-4)


def test_detect_boxes_equal_pytorch(trained_openvino: dict[str, Path], shapes_yaml: Path, tmp_path: Path) -> None:
    source = check_dataset(shapes_yaml)["val"]  # 128 px square images: the same input for any letterbox mode

    def boxes(weights: Path) -> list[torch.Tensor]:
        out = detect.run(
            weights=weights,
            source=source,
            imgsz=FIXTURE_IMGSZ,
            device="cpu",
            nosave=True,
            project=tmp_path,
            conf_thres=0.25,
        )
        return [f["boxes"] for f in out["frames"]]

    want, got = boxes(trained_openvino["pt"]), boxes(trained_openvino["openvino"])
    assert len(want) == 16 and sum(len(b) for b in want) > 16  # objects found in every image on average
    assert [len(b) for b in got] == [len(b) for b in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=0)  # pixels and confidences


def test_formats_benchmark_table_and_flags() -> None:
    from benchmarks import formats

    rows = [
        formats.Row("pt", Path("b_converted.pt"), 10.0, 0.5, 20.0),
        formats.Row("openvino", Path("b_openvino_model"), 10.1, 0.5, 8.0),
        formats.Row("onnx", note="running b.onnx needs onnxruntime"),
    ]
    lines = formats.table(rows).splitlines()
    assert lines[2] == "| PyTorch | `b_converted.pt` | 10.0 | 0.5000 | 20.0 | 1.00x |"
    assert lines[3] == "| OpenVINO | `b_openvino_model` | 10.1 | 0.5000 | 8.0 | 2.50x |"
    assert lines[4].startswith("| ONNX | — |") and "needs onnxruntime" in lines[4]
    with pytest.raises(UserError, match=r"no --weights given — train a model first \(python train.py"):
        formats.run()
    with pytest.raises(UserError, match="a median needs at least 3 rounds"):
        formats.check_opts(__file__, ["pt"], 320, 32, 2, 10, "cpu")
