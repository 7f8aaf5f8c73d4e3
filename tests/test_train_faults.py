"""Training when something goes wrong: a full disk or read-only outputs (one-line errors, the last good checkpoint
left intact), resuming checkpoints older code wrote and cut-off results.csv files, the NaN guard's message and AMP
patience."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from tests.fixtures_models import micro_cfg
from tests.fixtures_train import cli, csv_epochs, train_hyp
from utils.core.errors import UserError, cli_main

REC = {"yaml": {}, "state_dict": {}, "nc": 1}


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ disk full / read-only
@pytest.fixture
def last_pt(tmp_path) -> Path:
    """A good last.pt of epoch 0 that failed later writes must leave intact."""
    path = tmp_path / "weights" / "last.pt"
    save_checkpoint({"model": REC, "epoch": 0}, path)
    return path


def _assert_intact(path: Path) -> None:
    assert load_checkpoint(path)["epoch"] == 0
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # the temp file was removed


@pytest.mark.parametrize(
    "exc,cause",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "not writable"),
        (OSError(errno.EROFS, "Read-only file system"), "not writable"),
    ],
)
def test_checkpoint_write_failure_is_one_line(last_pt, monkeypatch, exc, cause):
    def failing_save(obj, f):
        f.write(b"partial")
        raise exc

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError) as e:
        save_checkpoint({"model": REC, "epoch": 1}, last_pt)
    msg = _one_line(e)
    assert str(last_pt) in msg and cause in msg
    monkeypatch.undo()
    _assert_intact(last_pt)


def test_torch_zip_writer_runtime_error_on_full_disk(last_pt, monkeypatch):
    """torch.save reports a failed write as RuntimeError from inline_container.cc, not OSError."""

    def full_disk_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    with pytest.raises(UserError) as e:
        save_checkpoint({"model": REC, "epoch": 1}, last_pt)
    assert str(last_pt) in _one_line(e) and "no space left on device" in str(e.value)
    monkeypatch.undo()
    _assert_intact(last_pt)

    def buggy_save(obj, f):  # any other RuntimeError is a bug and keeps its type
        raise RuntimeError("cannot pickle 'generator' object")

    monkeypatch.setattr(torch, "save", buggy_save)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"model": REC, "epoch": 1}, last_pt)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 512 KiB tmpfs (we run as root); skipped where mounting is refused."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:100]}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_and_read_only_tmpfs(small_tmpfs):
    from utils.core.files import check_writable

    path = small_tmpfs / "weights" / "last.pt"
    save_checkpoint({"model": REC, "epoch": 0}, path)
    with pytest.raises(UserError) as e:  # 4 MB of floats on a 512 KiB disk
        save_checkpoint({"model": REC, "epoch": 1, "pad": torch.zeros(1 << 20)}, path)
    assert str(path) in _one_line(e) and "no space left on device" in str(e.value)
    _assert_intact(path)
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot remount read-only: {r.stderr.strip()[:100]}")
    with pytest.raises(UserError) as e:
        save_checkpoint({"model": REC, "epoch": 1}, path)
    assert "not writable (read-only file system)" in _one_line(e)
    _assert_intact(path)
    with pytest.raises(UserError, match="not writable"):
        check_writable(small_tmpfs / "runs" / "exp")


def test_read_only_project_fails_before_data_scan(shapes_yaml, tmp_path, monkeypatch):
    """The up-front probe of --project: a read-only folder is one line before the dataset is even read."""
    import tempfile

    import train
    import utils.training.train_setup

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    def no_scan(*a, **k):
        raise AssertionError("the dataset must not be read")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    monkeypatch.setattr(utils.training.train_setup, "check_dataset", no_scan)  # where prepare_data looks it up
    t0 = time.time()
    with pytest.raises(UserError) as e:
        train.run(data=str(shapes_yaml), project=str(tmp_path / "ro"), name="exp", device="cpu")
    assert str(tmp_path / "ro" / "exp") in _one_line(e) and "not writable" in str(e.value)
    assert time.time() - t0 < 5 and not (tmp_path / "ro").exists()


def test_run_folder_and_results_writes_are_one_line(tmp_path, monkeypatch):
    import utils.core.files as files
    import utils.training.train_outputs as outputs
    from utils.core.files import increment_path, yaml_save
    from utils.training.train_outputs import TrainOutputs

    real_mkdir = Path.mkdir

    def mkdir_ro(self, *a, **k):
        if tmp_path in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir_ro)
    with pytest.raises(UserError, match=r"cannot write .*exp: not writable \(permission denied\)"):
        increment_path(tmp_path / "exp", mkdir=True)
    with pytest.raises(UserError, match=r"cannot write .*weights: not writable"):
        TrainOutputs(tmp_path / "run", plots=False)
    monkeypatch.undo()

    out = TrainOutputs(tmp_path / "run", plots=False)
    out.log_epoch(0, [0.5] * 13)
    yaml_save(tmp_path / "run" / "opt.yaml", {"epochs": 3})
    before = (out.csv.read_bytes(), (tmp_path / "run" / "opt.yaml").read_bytes())

    def full_open(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[0]))

    monkeypatch.setattr(outputs, "open", full_open, raising=False)
    monkeypatch.setattr(files, "open", full_open, raising=False)
    with pytest.raises(UserError, match=r"results\.csv: no space left on device"):
        out.log_epoch(1, [0.5] * 13)
    with pytest.raises(UserError, match=r"opt\.yaml: no space left on device"):
        yaml_save(tmp_path / "run" / "opt.yaml", {"epochs": 4})
    monkeypatch.undo()
    assert (out.csv.read_bytes(), (tmp_path / "run" / "opt.yaml").read_bytes()) == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["opt.yaml", "results.csv", "weights"]


def test_cli_main_last_line_of_defence(capsys):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/exp/results.png")

    with pytest.raises(SystemExit) as e:
        cli_main(full)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR: /data/runs/exp/results.png: no space left on device") and "\n" not in err

    def bug():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    with pytest.raises(FileNotFoundError):  # other OSErrors may be bugs: they keep their traceback
        cli_main(bug)


# ----------------------------------------------------------------------------------------------- resume across versions
def _old_checkpoint(path: Path, shapes_yaml: Path, epochs: int = 2, **extra) -> Path:
    """An unfinished epoch-0 checkpoint whose opt and hyp lack keys today's code reads (as older code wrote)."""
    from models.yolo import Model
    from utils.training.train_setup import make_optimizer

    model = Model(micro_cfg(nc=3))
    hyp = train_hyp()
    from utils.training.train_options import TrainOptions

    optimizer, _, _ = make_optimizer(
        model, TrainOptions(total_batch_size=16, optimizer="AdamW", layer_decay=0, epochs=epochs, cos_lr=False), hyp
    )
    opt = {
        "data": str(shapes_yaml),
        "epochs": epochs,
        "batch_size": 16,
        "imgsz": 64,
        "total_batch_size": 16,
        "noplots": True,
        "noval": True,
        "device": "cpu",
        "workers": 0,
    }  # no rect, optimizer, seed, freeze, ...
    for k in ("box", "mosaic", "fliplr", "hsv_h"):
        hyp.pop(k)
    ckpt = new_checkpoint(0, 0.0, model, None, 0, optimizer, None, opt, hyp)
    ckpt.update(extra)
    return save_checkpoint(ckpt, path)


def test_resume_fills_missing_settings_with_one_warning(shapes_yaml, tmp_path, caplog):
    import train

    path = _old_checkpoint(tmp_path / "old" / "weights" / "last.pt", shapes_yaml)
    caplog.clear()
    r = train.run(resume=str(path), device="cpu", workers=0)
    warnings = [ln for ln in caplog.text.splitlines() if "lacks settings" in ln]
    assert len(warnings) == 1, caplog.text[-2000:]
    for key in ("opt.rect", "opt.optimizer", "opt.seed", "opt.freeze", "hyp.box", "hyp.mosaic", "hyp.fliplr"):
        assert key in warnings[0]
    assert "opt.device" not in warnings[0] and "opt.data" not in warnings[0]
    assert "Resuming training from epoch 1" in caplog.text
    assert r["epochs_trained"] == 2 and Path(r["save_dir"]) == tmp_path / "old"
    assert torch.load(path, weights_only=True)["epoch"] == -1  # finished and stripped


def test_resume_refuses_what_cannot_be_resumed_before_heavy_work(shapes_yaml, tmp_path, monkeypatch):
    import utils.training.train_setup
    from utils.training.train_setup import load_resume

    def no_scan(*a, **k):
        raise AssertionError("the dataset must not be read")

    monkeypatch.setattr(utils.training.train_setup, "check_dataset", no_scan)  # where prepare_data looks it up
    cases = {
        "version": ({"version": 99}, "checkpoint version 99, newer than this code reads (1)"),
        "noopt": ({"optimizer": None}, "cannot be resumed: it records no optimizer state"),
        "nodata": ({"opt": {"epochs": 2}}, "name no dataset"),
        "nosettings": ({"opt": None}, "records no training settings (opt)"),
        "done": ({"epoch": 1}, "already trained 2 of 2 epochs"),
    }
    for name, (extra, message) in cases.items():
        path = _old_checkpoint(tmp_path / name / "weights" / "last.pt", shapes_yaml, **extra)
        with pytest.raises(UserError) as e:
            load_resume(str(path), tmp_path, opt_defaults={"rect": False})
        assert message in _one_line(e) and str(path) in str(e.value), name
    # a checkpoint whose opt section is lost falls back to the run folder's opt.yaml (written at the start)
    from utils.core.files import yaml_save

    path = _old_checkpoint(tmp_path / "yaml" / "weights" / "last.pt", shapes_yaml, opt=None)
    yaml_save(tmp_path / "yaml" / "opt.yaml", {"data": str(shapes_yaml), "epochs": 5})
    _, ckpt = load_resume(str(path), tmp_path, opt_defaults={"rect": False})
    assert ckpt["opt"] == {"data": str(shapes_yaml), "epochs": 5, "rect": False}


def test_resume_cli_newer_version_one_line(shapes_yaml, tmp_path):
    path = _old_checkpoint(tmp_path / "v" / "weights" / "last.pt", shapes_yaml, version=2)
    r = cli("--resume", str(path), "--device", "cpu")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "checkpoint version 2" in r.stderr


ROW = "%20d" + ",%20.5g" * 13


@pytest.mark.parametrize("cut", [10, 60], ids=["in-epoch-field", "mid-row"])
def test_cut_off_results_csv_is_repaired(tmp_path, cut, caplog):
    from utils.training.train_outputs import TrainOutputs

    out = TrainOutputs(tmp_path, plots=False)
    for e in range(3):
        out.log_epoch(e, [0.1 * (e + 1)] * 13)
    data = out.csv.read_bytes()
    out.csv.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1 + cut])  # the run died writing epoch 2
    assert csv_epochs(out.csv) == [0, 1]
    caplog.clear()
    out.trim_csv(2)
    assert "dropped 1 malformed row" in caplog.text
    out.log_epoch(2, [9.0] * 13)
    lines = out.csv.read_text().splitlines()
    assert len(lines) == 4 and lines[3] == ROW % (2, *[9.0] * 13) and csv_epochs(out.csv) == [0, 1, 2]


def test_log_epoch_after_file_without_final_newline(tmp_path):
    from utils.training.train_outputs import TrainOutputs

    out = TrainOutputs(tmp_path, plots=False)
    out.log_epoch(0, [0.5] * 13)
    out.csv.write_bytes(out.csv.read_bytes()[:-1])  # cut just before the newline
    out.log_epoch(1, [0.25] * 13)
    assert csv_epochs(out.csv) == [0, 1] and out.csv.read_text().splitlines()[2] == ROW % (1, *[0.25] * 13)


# ------------------------------------------------------------------------------------------------------------ NaN guard
class FakeScaler:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def is_enabled(self) -> bool:
        return self.enabled


def _guard(tmp_path: Path, amp: bool):
    from utils.training.trainer import Trainer

    t = Trainer.__new__(Trainer)  # only the guard's state: no model or data needed
    t.parts, t.last, t.nonfinite_steps = SimpleNamespace(scaler=FakeScaler(amp)), tmp_path / "weights" / "last.pt", 0
    return t


def test_nan_guard_names_last_pt_only_when_it_exists(tmp_path):
    t = _guard(tmp_path, amp=False)
    items = torch.tensor([float("nan"), 0.1, 0.2])
    with pytest.raises(UserError) as e:  # CPU: the first non-finite loss stops
        t.nonfinite_guard(False, 0, 3, items)
    assert "no checkpoint was written yet" in _one_line(e) and "last.pt" not in str(e.value)
    save_checkpoint({"model": REC, "epoch": 0}, t.last)
    with pytest.raises(UserError, match=r"the last good checkpoint is .*weights/last\.pt"):
        t.nonfinite_guard(False, 1, 0, items)


def test_nan_guard_amp_patience(tmp_path):
    from utils.training.trainer import NONFINITE_PATIENCE

    t = _guard(tmp_path, amp=True)
    items = torch.tensor([float("inf"), 0.1, 0.2])
    for _ in range(NONFINITE_PATIENCE - 1):
        t.nonfinite_guard(False, 0, 1, items)  # the GradScaler skips these steps
    t.nonfinite_guard(True, 0, 2, items)  # a finite step resets the count
    for _ in range(NONFINITE_PATIENCE - 1):
        t.nonfinite_guard(False, 0, 3, items)
    with pytest.raises(UserError) as e:
        t.nonfinite_guard(False, 0, 4, items)
    assert f"for {NONFINITE_PATIENCE} consecutive steps" in _one_line(e) and "GradScaler" in str(e.value)


def test_nan_in_first_epoch_says_no_checkpoint_yet(shapes_yaml, micro_cfg_file, tmp_path, monkeypatch):
    import train
    import utils.training.loss as loss_mod

    class AlwaysNaN(loss_mod.ComputeLoss):
        def __call__(self, p, targets):
            loss, items = super().__call__(p, targets)
            return loss * float("nan"), items

    monkeypatch.setattr(train, "ComputeLoss", AlwaysNaN)
    with pytest.raises(UserError, match="non-finite training loss at epoch 0, batch 0") as e:
        train.run(
            cfg=str(micro_cfg_file),
            data=str(shapes_yaml),
            hyp=train_hyp(),
            epochs=2,
            batch_size=16,
            imgsz=64,
            project=str(tmp_path),
            name="n",
            workers=0,
            device="cpu",
            noplots=True,
            noval=True,
            noautoanchor=True,
        )
    assert "no checkpoint was written yet" in str(e.value) and not (tmp_path / "n" / "weights" / "last.pt").exists()
