"""Shared utilities: box conversions, run folders, yaml errors, device strings, atomic checkpoints, the logger."""

import os

import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from utils.core.boxes import clip_boxes, scale_boxes, segments2boxes, xywh2xyxy, xywhn2xyxy, xyxy2xywh, xyxy2xywhn
from utils.core.device import select_device
from utils.core.errors import UserError, cli_main
from utils.core.files import increment_path, yaml_load
from utils.core.log import LOGGER


def test_box_round_trips_numpy_and_torch():
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 4.0, 2.0]])
    xywh = xyxy2xywh(xyxy)
    assert np.allclose(xywh[0], [30, 50, 40, 60])
    assert np.allclose(xywh2xyxy(xywh), xyxy)
    t = torch.tensor(xyxy)
    assert isinstance(xyxy2xywh(t), torch.Tensor)
    assert torch.allclose(xywh2xyxy(xyxy2xywh(t)), t)
    n = xyxy2xywhn(xyxy, w=100, h=200)
    assert np.allclose(n[0], [0.3, 0.25, 0.4, 0.3])
    assert np.allclose(xywhn2xyxy(n, w=100, h=200, padw=5, padh=7), xyxy + [5, 7, 5, 7])


def test_conversions_do_not_modify_input():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    xyxy2xywh(x)
    assert np.array_equal(x, [[1.0, 2.0, 3.0, 4.0]])


def test_scale_boxes_inverts_letterbox():
    # a 200x100 (w x h) image letterboxed to 128x128: gain 0.64, padded 32 px top and bottom
    boxes = torch.tensor([[64.0 * 0.64, 32 + 10 * 0.64, 128 * 0.64, 32 + 60 * 0.64]])
    out = scale_boxes((128, 128), boxes.clone(), (100, 200))
    assert torch.allclose(out, torch.tensor([[64.0, 10.0, 128.0, 60.0]]), atol=1e-4)
    out2 = scale_boxes((128, 128), boxes.clone(), (100, 200), ratio_pad=((0.64, 0.64), (0, 32)))
    assert torch.allclose(out2, out)


def test_clip_and_segments():
    b = clip_boxes(np.array([[-5.0, -1.0, 300.0, 50.0]]), (40, 200))
    assert np.allclose(b, [[0, 0, 200, 40]])
    seg = [np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 20.0]])]
    assert np.allclose(segments2boxes(seg), [[5, 10, 10, 20]])


def test_increment_path(tmp_path):
    p = tmp_path / "exp"
    assert increment_path(p) == p
    p.mkdir()
    assert increment_path(p) == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    (tmp_path / "exp7").mkdir()
    assert increment_path(p) == tmp_path / "exp8"
    assert increment_path(p, exist_ok=True) == p


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(UserError, match=r"bad\.yaml line \d"):
        yaml_load(bad)
    with pytest.raises(UserError, match="not found"):
        yaml_load(tmp_path / "missing.yaml")


def test_cli_main_turns_user_error_into_exit_2(capsys):
    def boom():
        raise UserError("the thing is wrong — fix it")

    with pytest.raises(SystemExit) as e:
        cli_main(boom)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "ERROR: the thing is wrong — fix it"


def test_select_device_cpu_and_missing_gpu():
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            select_device("0")
        assert select_device("").type == "cpu"


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"yaml": {}, "state_dict": {}, "nc": 1}, "epoch": 0}, path)
    assert load_checkpoint(path)["epoch"] == 0

    def exploding_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(RuntimeError):
        save_checkpoint({"model": {"yaml": {}, "state_dict": {}, "nc": 1}, "epoch": 1}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 0  # previous good file intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "imagenet.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(UserError, match="no model record"):
        load_checkpoint(other)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_logger_lines_reach_caplog_once(caplog):
    """LOGGER keeps its lines off the root logger (a root handler would print them twice); caplog still sees them."""
    LOGGER.warning("disk almost full")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [("yolo", "WARNING", "disk almost full")]
    assert not LOGGER.propagate
