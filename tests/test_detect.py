"""detect.py end to end: folders with a corrupt file, videos, labels that match the API, bad input, stream reader,
images of extreme aspect ratio."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from tests.fixtures_data import write_images, write_video
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.dataloaders.sources import LoadImages, LoadStreams, StreamReader, collect_files, is_stream, load_source
from utils.inference.api import load_model

FAST = dict(imgsz=64, device="cpu")


def test_cli_folder_with_corrupt_file(micro_pt: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "src")
    (tmp_path / "src" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "detect.py"),
            "--weights",
            str(micro_pt),
            "--source",
            str(tmp_path / "src"),
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
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert out.count("WARNING") == 1 and "broken.jpg" in out and "Traceback" not in out
    saved = sorted(f.name for f in (tmp_path / "runs" / "exp").iterdir())
    assert saved == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert cv2.imread(str(tmp_path / "runs" / "exp" / "img2.jpg")).shape == (80, 80, 3)  # original size
    assert "Speed:" in out and "Results saved to" in out


def test_video_gives_mp4_and_label_per_frame(micro_pt: Path, tmp_path: Path) -> None:
    src = write_video(tmp_path / "clip.mp4")
    res = detect.run(weights=micro_pt, source=src, save_txt=True, project=tmp_path, **FAST)
    out = res["save_dir"] / "clip.mp4"
    cap = cv2.VideoCapture(str(out))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 10 and {f.shape for f in frames} == {(64, 96, 3)}
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10, abs=0.01)
    labels = sorted((res["save_dir"] / "labels").glob("*.txt"))
    assert [f.name for f in labels] == sorted(f"clip_{k}.txt" for k in range(1, 11))
    assert [f["frame"] for f in res["frames"]] == list(range(1, 11))


def test_save_txt_conf_matches_api(micro_pt: Path, tmp_path: Path) -> None:
    files = write_images(tmp_path / "src", n=2)
    kw = dict(conf_thres=0.001, max_det=20, **FAST)  # random weights: a low threshold gives boxes to compare
    res = detect.run(
        weights=micro_pt,
        source=tmp_path / "src",
        save_txt=True,
        save_conf=True,
        nosave=True,
        save_csv=True,
        save_crop=True,
        project=tmp_path,
        **kw,
    )
    api = load_model(micro_pt, device="cpu", imgsz=64, conf=0.001, max_det=20)
    for f in files:
        r = api(str(f))[0]
        rows = np.loadtxt(res["save_dir"] / "labels" / f"{f.stem}.txt", ndmin=2)
        assert len(r) > 0 and rows.shape == (len(r), 6)
        np.testing.assert_allclose(rows[:, 0], r.cls.numpy())
        np.testing.assert_allclose(rows[:, 1:5], r.xywhn.numpy(), atol=1e-5)
        np.testing.assert_allclose(rows[:, 5], r.conf.numpy(), atol=1e-5)
    assert not list(res["save_dir"].glob("*.jpg"))  # --nosave
    assert len(open(res["save_dir"] / "predictions.csv").readlines()) == 1 + sum(len(f["boxes"]) for f in res["frames"])
    assert list((res["save_dir"] / "crops").rglob("*.jpg"))


def test_bad_inputs(micro_pt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        detect.run(weights=micro_pt, source=tmp_path / "missing", project=tmp_path, **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images or videos found"):
        detect.run(weights=micro_pt, source=tmp_path / "empty", project=tmp_path, **FAST)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="cannot open the video"):
        detect.run(weights=micro_pt, source=tmp_path / "bad.mp4", project=tmp_path, **FAST)
    (tmp_path / "w.pt").write_bytes(b"not weights")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        detect.run(weights=tmp_path / "w.pt", source=tmp_path, project=tmp_path, **FAST)
    write_images(tmp_path / "ok", n=1)
    res = detect.run(weights=micro_pt, source=tmp_path / "ok", project=tmp_path, imgsz=50, device="cpu")
    assert "using 64 64" in caplog.text and res["speed"]["inference"] > 0


def test_newest_weights(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no trained weights"):
        detect.newest_weights(tmp_path)
    for i, run in enumerate(("exp", "exp2")):
        f = tmp_path / run / "weights" / "best.pt"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + (1 - i) * 500))  # the older folder name holds the newer file
    assert detect.newest_weights(tmp_path) == tmp_path / "exp" / "weights" / "best.pt"


def test_view_img_headless_does_not_crash(
    micro_pt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    write_images(tmp_path / "src", n=1)
    detect.run(weights=micro_pt, source=tmp_path / "src", view_img=True, project=tmp_path, **FAST)
    assert "--view-img needs a display" in caplog.text


def test_source_collection(tmp_path: Path) -> None:
    files = write_images(tmp_path / "a", n=3)
    write_video(tmp_path / "a" / "v.avi", n=2)
    (tmp_path / "a" / "notes.md").write_text("skip me")
    (tmp_path / "list.txt").write_text(f"a/img0.jpg\n{files[2]}\n\n")
    assert collect_files(tmp_path / "a") == ([str(f) for f in files], [str(tmp_path / "a" / "v.avi")])
    assert collect_files(str(tmp_path / "a" / "img[12].jpg"))[0] == [str(f) for f in files[1:]]
    assert collect_files(tmp_path / "list.txt")[0] == [str(tmp_path / "a" / "img0.jpg"), str(files[2])]
    assert [is_stream(s) for s in ("0", "rtsp://h/x", "HTTP://h/x.mjpg", "x.streams", "a/img0.jpg", "10.jpg")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert isinstance(load_source(tmp_path / "a"), LoadImages)
    frames = [b[0] for b in LoadImages(tmp_path / "a", vid_stride=1)]
    assert [f.kind for f in frames] == ["image"] * 3 + ["video"] * 2
    assert frames[3].describe().startswith("video 4/4 (frame 1/2)")


def test_stream_reader_keeps_newest_frame(tmp_path: Path) -> None:
    src = write_video(tmp_path / "cam.mp4", n=10)
    reader = StreamReader(str(src))  # same code path as a webcam / RTSP stream, fed by a file
    reader.thread.join(timeout=20)  # the thread drains the source while nobody reads
    assert reader.ended and reader.seq == 10
    im, seq = reader.read(last_seq=1)
    assert seq == 10 and abs(im.mean() - 180) < 4  # only the newest frame (grey 20*9) was kept
    assert reader.read(last_seq=10) is None  # ended, nothing newer: the loader stops
    grey = [int(round(b[0].image.mean() / 20)) for b in LoadStreams(str(src))]
    assert grey == sorted(set(grey)) and grey[-1] == 9  # frames only move forward, never repeated


def test_stream_reader_times_out_on_stall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reader = StreamReader(str(write_video(tmp_path / "s.mp4", n=3)), timeout=0.2)
    reader.thread.join(timeout=20)
    reader.ended = False  # pretend the source is alive but silent
    t = time.time()
    assert reader.read(last_seq=reader.seq) is None and time.time() - t >= 0.19
    assert "no new frame" in caplog.text


def test_unopenable_stream_is_user_error() -> None:
    with pytest.raises(UserError, match="cannot open the stream"):
        StreamReader("rtsp://127.0.0.1:1/none", timeout=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")
def test_half_on_cuda(micro_pt: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "src", n=1)
    res = detect.run(weights=micro_pt, source=tmp_path / "src", half=True, device="0", imgsz=64, project=tmp_path)
    assert len(res["frames"]) == 1


def test_detector_and_detect_folder_with_extreme_images(tmp_path, micro_pt):
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for hw in [(2, 3000), (3000, 1), (40, 60)]]
    model = load_model(micro_pt, imgsz=64)
    for augment in (False, True):  # TTA resizes the letterboxed input again
        out = model(ims, bgr=True, augment=augment)
        assert len(out) == 3 and all(r.boxes.shape[1] == 6 and torch.isfinite(r.boxes).all() for r in out)
    src = tmp_path / "src"
    src.mkdir()
    for name, im in zip(("wide.png", "tall.png", "normal.jpg"), ims):
        assert cv2.imwrite(str(src / name), im)
    detect.run(weights=micro_pt, source=src, imgsz=64, device="cpu", project=tmp_path / "runs")
    assert sorted(f.name for f in (tmp_path / "runs" / "exp").iterdir()) == ["normal.jpg", "tall.png", "wide.png"]
