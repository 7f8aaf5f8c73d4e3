"""Checkpoints written before the layer folders (tests/fixtures/legacy, made by commit 64409cc) still work after
the move: they are plain data (loadable with weights_only=True), so the modules' import paths do not matter to them.
detect, val and train --resume each run on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import val
from data.scripts.make_shapes import NAMES, generate_shapes
from models.checkpoint import load_checkpoint, model_from_record

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def legacy_data(tmp_path_factory) -> Path:
    """The run's dataset yaml under the relative name its opt.data records (legacy_shapes.yaml), in a fresh folder."""
    base = tmp_path_factory.mktemp("legacy")
    root = generate_shapes(base / "shapes", n_train=16, n_val=8, imgsz=96, seed=0)
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(NAMES)}
    (base / "legacy_shapes.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return base


def test_legacy_files_are_plain_data() -> None:
    """The safe loader reads both files as they are (no pickled classes), and the records rebuild the same model."""
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(LEGACY / name, map_location="cpu", weights_only=True)
        assert ckpt["version"] == 1 and ckpt["model"]["names"] == {0: "circle", 1: "rectangle", 2: "triangle"}
    last = load_checkpoint(LEGACY / "last.pt")
    assert last["epoch"] == 0 and last["optimizer"] is not None and last["opt"]["epochs"] == 2
    model = model_from_record(last["ema"])
    state = model.state_dict()
    assert set(state) == set(last["ema"]["state_dict"])  # every key of the old layout has its place in today's model
    assert all(torch.equal(state[k].float(), v.float()) for k, v in last["ema"]["state_dict"].items())


def test_legacy_best_runs_in_detect_and_val(legacy_data: Path, tmp_path: Path) -> None:
    images = sorted((legacy_data / "shapes" / "images" / "val").iterdir())[:2]
    out = detect.run(weights=LEGACY / "best.pt", source=[str(p) for p in images], imgsz=96, project=tmp_path, name="d")
    assert len(out["frames"]) == 2 and Path(out["save_dir"], images[0].name).is_file()
    (p, r, map50, map5095, *_), maps, _ = val.run(
        data=legacy_data / "legacy_shapes.yaml", weights=LEGACY / "best.pt", imgsz=96, batch_size=8, project=tmp_path
    )
    assert 0.0 <= map5095 <= map50 <= 1.0 and len(maps) == 3


def test_legacy_last_resumes(legacy_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume continues the old run at epoch 1 of 2 (opt.data is relative: the test runs where it resolves)."""
    monkeypatch.chdir(legacy_data)
    weights = legacy_data / "runs" / "legacy" / "weights"
    weights.mkdir(parents=True)
    shutil.copy(LEGACY / "last.pt", weights / "last.pt")
    res = train.run(resume=str(weights / "last.pt"), device="cpu", workers=0)
    assert res["epochs_trained"] == 2 and Path(res["save_dir"]) == legacy_data / "runs" / "legacy"
    assert load_checkpoint(weights / "last.pt")["epoch"] == -1  # finished and stripped by today's code
