"""export.py --include openvino --int8: NNCF post-training quantization of a micro model on the shapes fixture's train
images — outputs close to fp32, INT8 in the metadata and in DetectBackend, calibration letterboxed like val, and the
bad-input cases as one line with exit code 2 before any model is loaded.

NNCF never enters the pytest process: the INT8 export runs as `python export.py` in a subprocess. Imported here
(as it was until 22f8519, through export.run), a test that ran later in the suite died with a segmentation fault."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import export
from models.checkpoint import model_record, save_checkpoint
from models.yolo import Model
from tests.fixtures_models import MICRO_CFG, MICRO_NAMES
from utils.core.errors import UserError, cli_main
from utils.core.files import yaml_load
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import create_dataloader
from utils.inference.quantize import Calibration, detect_head_ops, import_nncf

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
if importlib.util.find_spec("nncf") is None:  # found, not imported (see the module docstring)
    pytest.skip("nncf is not installed (pip install nncf)", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]

SIZE = 128  # the fixture images' size: letterboxing keeps them as they are
LOGIT_STD = 2.0  # spread of the head's raw outputs, as a trained head has (scores across 0..1, not all ~0.5)


def val_images(yaml_file: Path, split: str = "val") -> torch.Tensor:
    """Every image of a split letterboxed to SIZE x SIZE as val.py's square batches: (N, 3, SIZE, SIZE) 0-1."""
    ds = create_dataloader(check_dataset(yaml_file)[split], SIZE, 16, 32, pad=0.5, workers=0)[1]
    return torch.stack([ds[i][0] for i in range(ds.n)]).float() / 255


def spread_head_checkpoint(path: Path, images: torch.Tensor) -> Path:
    """A random micro model whose Detect convolutions are rescaled so their raw outputs have std LOGIT_STD on the
    fixture images, saved as train.py saves it. A plain random model's head outputs barely move (every score near
    its prior), so any quantization would look exact; here scores span 0..1 and boxes move within their cells."""
    torch.manual_seed(1)
    model = Model(MICRO_CFG, nc=len(MICRO_NAMES)).eval()
    model.names = dict(MICRO_NAMES)
    detect = model.model[-1]
    with torch.no_grad():
        for conv in detect.m:
            conv.bias.zero_()
        for conv, raw in zip(detect.m, model(images)[1]):
            conv.weight.mul_(LOGIT_STD / raw.std())
    return save_checkpoint({"epoch": -1, "model": model_record(model), "ema": None}, path)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory: pytest.TempPathFactory, shapes_yaml: Path) -> dict[str, Path]:
    """The spread-head micro model exported to fp32 and to INT8 OpenVINO (16 calibration images of the train split)."""
    pt = spread_head_checkpoint(tmp_path_factory.mktemp("int8") / "micro.pt", val_images(shapes_yaml, "train"))
    fp32 = export.run(weights=pt, imgsz=SIZE, include=["openvino"])["openvino"]
    cmd = [sys.executable, str(ROOT / "export.py"), "--weights", str(pt), "--imgsz", str(SIZE), "--include"]
    cmd += ["openvino", "--int8", "--data", str(shapes_yaml), "--int8-images", "16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {"pt": pt, "fp32": fp32, "int8": pt.parent / "micro_int8_openvino_model"}


def test_int8_folder_and_metadata(int8_export: dict[str, Path]) -> None:
    folder = int8_export["int8"]
    assert folder == int8_export["pt"].parent / "micro_int8_openvino_model"  # YOLOv5's name; fp32 folder kept
    assert sorted(p.name for p in folder.iterdir()) == ["micro.bin", "micro.xml", "micro.yaml"]
    meta = yaml_load(folder / "micro.yaml")
    assert meta == {
        "stride": 32,
        "names": MICRO_NAMES,
        "int8": True,
        "int8_images": 16,
        "int8_preset": "mixed",
        "int8_float_head": True,
    }
    assert "int8" not in yaml_load(int8_export["fp32"] / "micro.yaml")
    model = ov.Core().read_model(str(folder / "micro.xml"))  # a lone .xml says it too
    assert model.get_rt_info(["model_info", "int8"]).astype(str) == "True"
    # int8 weights: the .bin shrinks to well under half of the fp32 one (biases and the float head stay fp32)
    assert (folder / "micro.bin").stat().st_size < 0.4 * (int8_export["fp32"] / "micro.bin").stat().st_size


def test_quantized_except_the_detect_head(int8_export: dict[str, Path]) -> None:
    """FakeQuantize ops throughout the network, none inside the Detect layer (convolutions + box decode in float)."""
    model = ov.Core().read_model(str(int8_export["int8"] / "micro.xml"))
    fq = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fq) >= 20
    head = set(detect_head_ops(model))
    assert sum(op.get_type_name() == "Convolution" for op in model.get_ops() if op.get_friendly_name() in head) == 3
    consumers = {t.get_node().get_friendly_name() for op in fq for t in op.output(0).get_target_inputs()}
    assert not consumers & head


# DetectBackend on both exports in a child process: with the INT8 model compiled and run inside the pytest process,
# a later test died with a segmentation fault (rc 139, in an unrelated test's subprocess.run; no faulthandler output)
RUN_BOTH = """
import sys, torch
from utils.inference.backend import DetectBackend
fp32, int8 = DetectBackend(sys.argv[1]), DetectBackend(sys.argv[2])
x = torch.load(sys.argv[3], weights_only=True)
with torch.no_grad():
    want, got = fp32(x), int8(x)
torch.save({"want": want, "got": got, "int8": int8.int8, "fp32_int8": fp32.int8, "openvino": int8.openvino,
            "stride_names": [int8.stride, int8.names]}, sys.argv[4])
"""


def run_both(fp32: Path, int8: Path, x: torch.Tensor, work: Path) -> dict:
    """The fp32 and INT8 folders' DetectBackend outputs on x (and what the backend says of them), in a child."""
    torch.save(x, work / "x.pt")
    cmd = [sys.executable, "-c", RUN_BOTH, str(fp32), str(int8), str(work / "x.pt"), str(work / "out.pt")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(work / "out.pt", weights_only=True)


def test_int8_outputs_close_to_fp32(int8_export: dict[str, Path], shapes_yaml: Path) -> None:
    """DetectBackend runs the INT8 folder; on the 16 val images its decoded outputs stay close to the fp32 export's.

    Bounds: an 8-bit activation resolves 1/255 of its calibrated range, and the errors of ~20 quantized layers add
    up. Measured here: box centres off by 0.10 px on average (99th percentile 0.8 px, in a 128 px input), scores
    by 0.005 (99th percentile 0.03); the quick-start model at 320 px: 0.13 px (0.6 px) and 0.012 (0.06). The bounds
    are about 3x this micro model's figures (room for other CPUs' int8 kernels); a broken calibration fails them
    by far (ranges taken on black images, measured: centres off by 5.5 px on average, 31 px at the 99th percentile)."""
    x = val_images(shapes_yaml)
    out = run_both(int8_export["fp32"], int8_export["int8"], x, int8_export["pt"].parent)
    assert out["int8"] and not out["fp32_int8"] and out["openvino"] and out["stride_names"] == [32, MICRO_NAMES]
    want, got = out["want"], out["got"]
    assert got.shape == want.shape == (16, 1008, 7)
    assert want[..., 4:].min() < 0.05 and want[..., 4:].max() > 0.95  # the spread head: scores across 0..1
    err = (got - want).abs()
    xy, scores = err[..., :2], err[..., 4:]
    assert xy.max() > 0.01  # quantized: not the fp32 graph
    assert xy.mean() < 0.3 and xy.quantile(0.99) < 2.5, (xy.mean(), xy.quantile(0.99))
    assert scores.mean() < 0.015 and scores.quantile(0.99) < 0.1, (scores.mean(), scores.quantile(0.99))
    wh = err[..., 2:4] / want[..., 2:4]
    assert wh.mean() < 0.08, wh.mean()


def test_calibration_is_vals_letterbox(shapes_yaml: Path) -> None:
    """Calibration images are the val loader's square letterbox of the train split, evenly spaced, in batches of
    the export's batch size (the last one filled from the first images)."""
    train = check_dataset(shapes_yaml)["train"]
    calib = Calibration.from_split(train, (SIZE, SIZE), batch=4, images=6)
    assert calib.groups == [[0, 6, 12, 19], [25, 31, 0, 6]]  # linspace(0, 31, 6) rounded, then wrapped
    assert calib.images == 6
    want = val_images(shapes_yaml, "train")
    assert torch.equal(torch.from_numpy(calib.batch(calib.groups[1])), want[[25, 31, 0, 6]])
    wide = Calibration.from_split(train, (64, 96), batch=1, images=50)  # more than the split has: all 32
    assert wide.images == 32 and wide.batch(wide.groups[0]).shape == (1, 3, 64, 96)


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """export.py's CLI in this process; returns its one stderr line after asserting exit code 2."""
    with pytest.raises(SystemExit) as e:
        cli_main(lambda: export.run(**vars(export.parse_opt(argv))))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("ERROR: "), err
    return err[0]


def test_bad_input_one_line_exit_2(tmp_path: Path, shapes_yaml: Path, capsys: pytest.CaptureFixture) -> None:
    """Each checked before the checkpoint is loaded: the weights file does not even exist."""
    base = ["--weights", str(tmp_path / "missing.pt"), "--int8"]
    assert "add --data" in cli([*base, "--include", "openvino"], capsys)
    assert "OpenVINO models only, not onnx" in cli([*base, "--include", "onnx", "--data", str(shapes_yaml)], capsys)
    assert "not pt" in cli([*base, "--include", "openvino", "pt", "--data", str(shapes_yaml)], capsys)
    line = cli([*base, "--include", "openvino", "--data", str(shapes_yaml), "--int8-images", "0"], capsys)
    assert "--int8-images 0: must be >= 1" in line
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    empty = tmp_path / "empty.yaml"
    empty.write_text(
        yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val", "names": ["a"]})
    )
    assert "no images found" in cli([*base, "--include", "openvino", "--data", str(empty)], capsys)
    no_train = tmp_path / "no_train.yaml"
    no_train.write_text(yaml.safe_dump({"path": str(tmp_path), "val": "images/val", "names": ["a"]}))
    assert "no 'train' split" in cli([*base, "--include", "openvino", "--data", str(no_train)], capsys)


def test_missing_nncf_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # what an uninstalled package looks like to import
    with pytest.raises(UserError, match="pip install nncf"):
        import_nncf()


def test_int8_benchmark_table_and_flags(tmp_path: Path) -> None:
    from benchmarks import int8 as bench

    rows = [
        bench.Result(320, "fp32", Path("b_openvino_model"), map5095=0.5, ms=20.0),
        bench.Result(320, "chosen", Path("b_int8_openvino_model"), 19.4, 0.503, 10.0, 0.13, 0.71, 0.02, 0.074),
    ]
    lines = bench.table(rows).splitlines()
    assert lines[2] == "| 320 | fp32 | 0.5000 | +0.0000 | 20.0 | 50.0 | 1.00x | — | — | — | 0 |"
    int8_row = "| 320 | INT8 chosen | 0.5030 | +0.0030 | 10.0 | 100.0 | 2.00x | 0.13 / 0.71 | 2.0 % | 0.074 | 19 |"
    assert lines[3] == int8_row
    with pytest.raises(UserError, match="train one first"):
        bench.run(weights=str(tmp_path / "missing.pt"))
    opts = dict(batch_size=1, runs=2, iters=1, threads=0, precision="f32", hint="none", int8_images=1)
    with pytest.raises(UserError, match="a median needs at least 3 rounds"):
        bench.check_opts(__file__, "data.yaml", [320], ["chosen"], opts)
    with pytest.raises(UserError, match="--settings 'fast': not a valid choice"):
        bench.check_opts(__file__, "data.yaml", [320], ["fast"], opts)
