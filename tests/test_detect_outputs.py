"""detect.py outputs: inputs that share a file name keep separate images / labels / videos (and the log's counts are
the files on disk); not a single readable input is exit code 1 with one line (issue #11, item 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import detect
from tests.fixtures_data import write_video
from utils.core.errors import NoUsableInputError
from utils.core.files import ROOT

FAST = dict(imgsz=64, device="cpu")


def _image(path: Path, h: int, w: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def test_same_file_names_are_all_kept(micro_pt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shapes = {"a/img.jpg": (60, 80), "b/img.jpg": (70, 90), "c/img.png": (50, 40)}
    for i, (rel, (h, w)) in enumerate(shapes.items()):
        _image(tmp_path / rel, h, w, seed=i)
    (tmp_path / "list.txt").write_text("\n".join(shapes) + "\n")
    res = detect.run(
        weights=micro_pt,
        source=tmp_path / "list.txt",
        save_txt=True,
        save_crop=True,
        conf_thres=0.001,
        max_det=5,
        project=tmp_path / "runs",
        **FAST,
    )
    log = caplog.text
    d = res["save_dir"]
    saved = {f.name: cv2.imread(str(f)).shape[:2] for f in d.iterdir() if f.is_file()}
    assert saved == {"img.jpg": (60, 80), "img_2.jpg": (70, 90), "img_3.png": (50, 40)}  # each its own picture
    labels = sorted(f.name for f in (d / "labels").iterdir())
    assert labels == ["img.txt", "img_2.txt", "img_3.txt"]
    n_boxes = [len(f["boxes"]) for f in res["frames"]]
    assert [len((d / "labels" / n).read_text().splitlines()) for n in labels] == n_boxes
    assert sum(1 for _ in (d / "crops").rglob("*.jpg")) == sum(n_boxes) > 0  # no crop overwritten either
    assert f"{tmp_path / 'b/img.jpg'}: an earlier input is also named img, results saved as img_2.*" in log
    assert "3 labels saved" in log and log.count("results saved as") == 2  # said once per renamed input


def test_same_video_names_get_separate_videos(micro_pt: Path, tmp_path: Path) -> None:
    for sub, n in (("a", 6), ("b", 3)):
        (tmp_path / sub).mkdir()
        write_video(tmp_path / sub / "clip.mp4", n=n)
    res = detect.run(
        weights=micro_pt,
        source=[tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"],
        save_txt=True,
        project=tmp_path / "runs",
        **FAST,
    )
    d = res["save_dir"]
    counts = {}
    for name in ("clip.mp4", "clip_2.mp4"):
        cap = cv2.VideoCapture(str(d / name))
        counts[name] = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
    assert counts == {"clip.mp4": 6, "clip_2.mp4": 3}  # was one mp4 with all 9 frames
    labels = {f.stem for f in (d / "labels").iterdir()}
    assert labels == {f"clip_{k}" for k in range(1, 7)} | {f"clip_2_{k}" for k in range(1, 4)}


def test_no_readable_input_is_exit_1_one_line(micro_pt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"not an image at all")
    (src / "b.png").write_bytes(b"")
    with pytest.raises(NoUsableInputError, match="not one of its 2 input"):
        detect.run(weights=micro_pt, source=src, save_txt=True, save_csv=True, project=tmp_path / "py", **FAST)
    assert not (tmp_path / "py" / "exp").exists()  # no empty run folder (nor a header-only predictions.csv)
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "detect.py"),
            "--weights",
            str(micro_pt),
            "--source",
            str(src),
            "--imgsz",
            "64",
            "--device",
            "cpu",
            "--project",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stdout[-800:] + r.stderr[-800:]
    assert len(err) == 1 and err[0].startswith("ERROR: --source") and "could be read" in err[0]
    assert "Traceback" not in r.stderr and r.stdout.count("WARNING: skipping") == 2
    assert not (tmp_path / "runs" / "exp").exists()


def test_default_imgsz_is_the_training_size(tmp_path):
    """No --imgsz: a checkpoint that records its training size (train.py's opt) runs at it; one that does not, at
    YOLOv5's 640; an explicit --imgsz wins."""
    import detect
    from models.checkpoint import load_checkpoint, save_checkpoint
    from tests.fixtures_models import save_micro_checkpoint

    plain = save_micro_checkpoint(tmp_path / "plain.pt")
    ck = load_checkpoint(plain)
    ck["opt"] = {"imgsz": 96}
    trained = save_checkpoint(ck, tmp_path / "trained.pt")
    assert detect.default_imgsz(trained) == 96 and detect.default_imgsz(plain) == detect.DEFAULT_IMGSZ == 640
    img = tmp_path / "im.jpg"
    cv2.imwrite(str(img), np.full((200, 300, 3), 127, np.uint8))
    for name, w, size in (("t", trained, None), ("e", trained, 64)):  # both paths run end to end
        detect.run(weights=str(w), source=str(img), imgsz=size, project=str(tmp_path), name=name, nosave=True)
    import utils.inference.api as api

    for w, size, want in ((trained, None, (96, 96)), (trained, 64, (64, 64)), (plain, None, (640, 640))):
        d = api.Detector(w, imgsz=detect.default_imgsz(w) if size is None else size)
        assert tuple(d.imgsz) == want
