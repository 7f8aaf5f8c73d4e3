"""Issue #11, data side: a label cache cannot run code, cache write failures only warn, the label check decodes
with the loader's reader, images that vanish mid-run are skipped, extreme aspect ratios resize, nan/inf labels
are corrupt."""

from __future__ import annotations

import errno
import json
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import utils.dataloaders.label_check as lc
from tests.test_dataset import rect_dataset, rect_image
from utils.dataloaders.augment import letterbox
from utils.dataloaders.dataset import LoadImagesAndLabels, create_dataloader
from utils.dataloaders.label_check import load_labels, verify_image_label


@pytest.fixture
def ylog(caplog):
    """caplog that sees the project logger (it does not propagate to the root logger)."""
    from utils.core.log import LOGGER

    LOGGER.addHandler(caplog.handler)
    yield caplog
    LOGGER.removeHandler(caplog.handler)


@pytest.fixture
def filelog(tmp_path):
    """Project log lines from this process and from forked DataLoader workers (they inherit the file handler)."""
    import logging

    from utils.core.log import LOGGER

    handler = logging.FileHandler(tmp_path / "log.txt")
    LOGGER.addHandler(handler)
    yield lambda: (tmp_path / "log.txt").read_text()
    LOGGER.removeHandler(handler)
    handler.close()


@pytest.fixture(scope="module")
def micro_pt(tmp_path_factory) -> Path:
    from tests.test_backend import save_micro_checkpoint

    return save_micro_checkpoint(tmp_path_factory.mktemp("hardening") / "micro.pt")


def _files(d: Path) -> tuple[list[str], list[str]]:
    ims = sorted(str(f) for f in d.iterdir() if f.suffix == ".png")
    return ims, [f.replace("/images/", "/labels/").replace(".png", ".txt") for f in ims]


class _Marker:
    """Unpickling this object opens (creates) the marker file: a stand-in for any code a hostile pickle runs."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


# ------------------------------------------------------------------------------------------------ 1. cache runs no code
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_hostile_cache_runs_no_code_and_is_rebuilt(tmp_path, ylog, writer):
    d = rect_dataset(tmp_path, 3)
    cache, marker = tmp_path / "labels" / "train.cache", tmp_path / "marker"
    payload = {"im_files": [], "evil": _Marker(marker)}
    if writer == "torch":
        torch.save(payload, cache)  # what an old-format (torch) cache from a download could hold
    else:
        cache.write_bytes(pickle.dumps(payload))
    ds = LoadImagesAndLabels(d, 128)
    assert not marker.exists()  # nothing in the file ran
    assert ds.n == 3 and [len(lb) for lb in ds.labels] == [1, 1, 1]
    warned = [line for line in ylog.text.splitlines() if "label cache" in line]
    assert len(warned) == 1 and str(cache) in warned[0] and "rebuilding" in warned[0]
    with np.load(cache, allow_pickle=False) as z:  # replaced by plain arrays
        assert json.loads(z["meta"].tobytes())["im_files"] == ds.im_files
    ylog.clear()
    assert LoadImagesAndLabels(d, 128).n == 3 and "(from cache)" in ylog.text and "label cache" not in ylog.text


def test_cache_round_trip_boxes_polygons_and_messages(tmp_path):
    ims, lbs = [], []
    rows = {
        "a": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "b": None,
        "c": "0 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n1 0.6 0.6 0.9 0.7 0.7 0.9\n",
        "d": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",
        "e": "0 nan 0.5 0.2 0.2\n",
    }
    for name, text in rows.items():
        ims.append(str(rect_image(tmp_path, "t", f"{name}.png", (64, 48), (2, 2, 20, 20), 0, label=False)))
        lbs.append(str(tmp_path / "labels" / "t" / f"{name}.txt"))
        if text is not None:
            Path(lbs[-1]).parent.mkdir(parents=True, exist_ok=True)
            Path(lbs[-1]).write_text(text)
    first = load_labels(ims, lbs, nc=2)
    again = lc._read_cache(lc.cache_path_for(lbs), first.hash, 2)
    assert again is not None and again.im_files == first.im_files == [ims[i] for i in range(4)]
    assert again.label_files == first.label_files and again.counts == first.counts and again.msgs == first.msgs
    assert again.shapes.tolist() == first.shapes.tolist() == [[64, 48]] * 4
    assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(again.labels, first.labels))
    assert [len(s) for s in again.segments] == [0, 0, 2, 0]
    assert all(np.array_equal(a, b) for a, b in zip(again.segments[2], first.segments[2]))
    assert len(again.msgs) == 2 and "nan" in again.msgs[1]
    assert lc._read_cache(lc.cache_path_for(lbs), first.hash, 3) is None  # another nc: rescan


@pytest.mark.parametrize("bad", ["foreign_npz", "old_version", "bad_offsets", "object_array", "no_counts"])
def test_foreign_or_inconsistent_npz_cache_is_rebuilt(tmp_path, ylog, bad):
    ims, lbs = _files(rect_dataset(tmp_path, 2))
    ls = load_labels(ims, lbs, nc=None)
    cache = lc.cache_path_for(lbs)
    arrays = lc._pack(ls)
    if bad == "foreign_npz":
        arrays = {"x": np.zeros(3)}
    elif bad == "old_version":
        meta = json.loads(arrays["meta"].tobytes())
        arrays["meta"] = np.frombuffer(json.dumps({**meta, "version": "label-cache-1"}).encode(), np.uint8)
    elif bad == "no_counts":
        meta = json.loads(arrays["meta"].tobytes())
        arrays["meta"] = np.frombuffer(json.dumps({**meta, "counts": {}}).encode(), np.uint8)
    elif bad == "bad_offsets":
        arrays["label_index"] = np.array([0, 5, 1], np.int64)
    else:
        arrays["labels"] = np.array([_Marker(tmp_path / "marker")], dtype=object)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    ylog.clear()
    again = load_labels(ims, lbs, nc=None)
    assert again.im_files == ls.im_files and all(np.array_equal(a, b) for a, b in zip(again.labels, ls.labels))
    assert sum(str(cache) in line and "rebuilding" in line for line in ylog.text.splitlines()) == 1
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------------ 2. cache write fails
@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("File labels.cache cannot be opened."),
        PermissionError(13, "Permission denied"),
        OSError(errno.ENOSPC, "No space left"),
    ],
)
def test_cache_write_failure_warns_and_run_goes_on(tmp_path, monkeypatch, ylog, exc):
    d = rect_dataset(tmp_path, 3)

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(torch, "save", fail)  # the old writer (torch.save raises RuntimeError on a read-only dir)
    monkeypatch.setattr(lc, "_save_arrays", fail, raising=False)
    loader, ds = create_dataloader(d, 128, 2, 32, workers=0)
    assert ds.n == 3 and sum(len(b[2]) for b in loader) == 3
    assert f"cache directory {tmp_path / 'labels'} is not writeable, cache not saved" in ylog.text
    assert not list((tmp_path / "labels").glob("*.cache")) and not list((tmp_path / "labels").glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------ 3. same reader
def test_float_tiff_is_corrupt_at_scan_and_the_run_completes(tmp_path, ylog):
    d = rect_dataset(tmp_path, 3)
    Image.fromarray(np.random.default_rng(0).random((40, 50), np.float32), "F").save(d / "float.tif")
    (tmp_path / "labels" / "train" / "float.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert Image.open(d / "float.tif").mode == "F"  # PIL opens it; OpenCV cannot read it as 8-bit colour
    r = verify_image_label(str(d / "float.tif"), str(tmp_path / "labels" / "train" / "float.txt"))
    assert r.corrupt == 1 and "OpenCV cannot decode this TIFF (PIL mode 'F')" in r.msg
    loader, ds = create_dataloader(d, 128, 2, 32, workers=0)
    assert ds.n == 3 and sum(len(b[2]) for b in loader) == 3
    assert "3 images, 0 backgrounds, 1 corrupt" in ylog.text


def test_reduced_jpeg_check_fails_exactly_when_full_decode_fails():
    from utils.core.image_io import decode

    rng = np.random.default_rng(0)
    im = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), np.uint8), (0, 0), 2)
    base = cv2.imencode(".jpg", im)[1].ravel()
    outcomes = set()
    for k in range(120):  # truncations, byte flips anywhere and in the headers, inserted junk
        d = base.copy()
        if k % 4 == 0:
            d = d[: rng.integers(2, len(d))]
        elif k % 4 == 1:
            i = rng.integers(0, len(d), rng.integers(1, 20))
            d[i] = rng.integers(0, 255, len(i))
        elif k % 4 == 2:
            i = rng.integers(0, 700, rng.integers(1, 5))
            d[i] = rng.integers(0, 255, len(i))
        else:
            s = rng.integers(0, len(d))
            d = np.concatenate([d[:s], rng.integers(0, 255, rng.integers(1, 200)).astype(np.uint8), d[s:]])
        full, small = decode(d), decode(d, reduce=8)
        assert (full is None) == (small is None), k
        outcomes.add(full is None)
    assert outcomes == {True, False}  # both kinds of case were exercised


def test_reader_agrees_with_cv2_imread_and_opencv_limits(tmp_path, monkeypatch):
    from utils.core.image_io import imread

    f = tmp_path / "t.jpg"
    cv2.imwrite(str(f), cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (60, 80, 3), np.uint8), (0, 0), 2))
    f.write_bytes(f.read_bytes()[:-300])  # truncated: cv2.imread decodes it, the old imdecode reader did not
    assert np.array_equal(imread(f), cv2.imread(str(f)))
    assert imread(tmp_path / "missing.jpg") is None and imread(tmp_path) is None
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (33000).to_bytes(2, "big") * 2  # 33000 x 33000 is above OpenCV's pixel limit
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    assert imread(tmp_path / "huge.jpg") is None  # OpenCV raises here; the reader returns None
    assert imread(tmp_path / "huge.jpg", reduce=8) is not None  # ...but a 1/8 decode would pass: guarded below
    lb = str(tmp_path / "huge.txt")
    r = verify_image_label(str(tmp_path / "huge.jpg"), lb)
    assert r.corrupt == 1 and "cannot open image" in r.msg  # PIL's decompression-bomb limit comes first
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a user who lifted PIL's limit
    r = verify_image_label(str(tmp_path / "huge.jpg"), lb)
    assert r.corrupt == 1 and "image size 33000x33000 is above OpenCV's decode limit" in r.msg


def _warnings_for(text: str, name: str) -> int:
    return sum("cannot read the image any more" in line and name in line for line in text.splitlines())


@pytest.mark.parametrize("workers", [0, 2])
def test_image_deleted_after_scan_is_skipped_in_validation(tmp_path, filelog, workers):
    d = rect_dataset(tmp_path, 5)
    loader, ds = create_dataloader(d, 128, 2, 32, workers=workers)
    gone = ds.im_files[2]
    Path(gone).unlink()
    batches = list(loader)
    paths = [p for b in batches for p in b[2]]
    assert paths == [f for f in ds.im_files if f != gone]  # not replaced by a duplicate: counted once each
    assert [len(b[2]) for b in batches] == [2, 1, 1] and [b[0].shape[0] for b in batches] == [2, 1, 1]
    assert all(sorted(b[1][:, 0].unique().tolist()) == list(range(len(b[2]))) for b in batches)
    assert _warnings_for(filelog(), gone) == 1


def test_batch_that_lost_every_image_is_left_out(tmp_path):
    d = rect_dataset(tmp_path, 3)
    loader, ds = create_dataloader(d, 128, 1, 32, workers=0)
    Path(ds.im_files[0]).unlink()
    assert [b[2] for b in loader] == [(ds.im_files[1],), (ds.im_files[2],)]


@pytest.mark.parametrize("workers", [0, 2])
def test_image_deleted_after_scan_is_replaced_in_training(tmp_path, filelog, workers):
    d = rect_dataset(tmp_path, 6, wh=(64, 64))
    hyp = dict(
        mosaic=0.5,
        mixup=0.0,
        copy_paste=0.0,
        degrees=0.0,
        translate=0.1,
        scale=0.1,
        shear=0.0,
        perspective=0.0,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        flipud=0.0,
        fliplr=0.5,
    )
    loader, ds = create_dataloader(d, 64, 3, 32, hyp=hyp, augment=True, workers=workers, shuffle=True)
    gone = ds.im_files[1]
    Path(gone).unlink()
    for _ in range(2):  # two epochs (persistent workers): batches stay full, the file is warned about once
        batches = list(loader)
        assert [b[0].shape[0] for b in batches] == [3, 3] and all(gone not in b[2] for b in batches)
    assert 1 <= _warnings_for(filelog(), gone) <= max(workers, 1)  # once per process that met the file


def test_val_counts_each_image_once_when_one_vanishes(tmp_path, ylog, micro_pt):
    import val

    d = rect_dataset(tmp_path, 6, split="val")
    for f in (tmp_path / "labels" / "val").iterdir():  # two classes, like the micro model
        f.write_text(f"{int(f.stem) % 2}" + f.read_text()[1:])
    loader, ds = create_dataloader(d, 64, 2, 32, workers=0, rect=True, pad=0.5)
    Path(ds.im_files[3]).unlink()
    val.run(
        {"val": str(d), "names": {0: "circle", 1: "square"}, "nc": 2},
        weights=micro_pt,
        batch_size=2,
        imgsz=64,
        device="cpu",
        workers=0,
        dataloader=loader,
        plots=False,
        project=tmp_path / "runs",
    )
    row = next(m.split() for m in ylog.messages if re.match(r"\s+all\s", m))
    assert row[1:3] == ["5", "5"]  # 5 images, 5 instances: the vanished image is neither counted nor replaced


# ------------------------------------------------------------------------------------------------ 4. extreme shapes
@pytest.mark.parametrize("hw", [(2, 3000), (3000, 1), (1, 1)])
def test_letterbox_extreme_aspect_ratios(hw):
    im = np.full((*hw, 3), 50, np.uint8)
    a, ratio, pad = letterbox(im, 640, auto=True, stride=32)
    assert a.shape[0] % 32 == 0 and a.shape[1] % 32 == 0 and max(a.shape[:2]) == 640
    b, _, _ = letterbox(im, 640, auto=False)
    assert b.shape == (640, 640, 3) and (b == 50).any()  # the image (at least one row/column) is in there
    c, _, _ = letterbox(im, (64, 96), auto=False, scaleup=False)
    assert c.shape == (64, 96, 3)


def test_detector_and_detect_folder_with_extreme_images(tmp_path, micro_pt):
    import detect
    from utils.inference.api import load_model

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


# ------------------------------------------------------------------------------------------------ 12. nan / inf labels
@pytest.mark.parametrize(
    "row",
    [
        "0 nan 0.5 0.2 0.2",
        "0 0.5 inf 0.2 0.2",
        "nan 0.5 0.5 0.2 0.2",
        "0 0.5 0.5 -inf 0.2",
        "0 0.5 0.5 0.2 NaN",
        "1 0.1 0.2 0.5 nan 0.5 0.6 0.1 0.6",
    ],
)
def test_non_finite_label_values_are_corrupt(tmp_path, row):
    f = rect_image(tmp_path, "train", "x.png", (64, 64), (10, 10, 40, 40), 0)
    lb = tmp_path / "labels" / "train" / "x.txt"
    lb.write_text(f"0 0.5 0.5 0.2 0.2\n{row}\n")
    r = verify_image_label(str(f), str(lb), nc=3)
    assert r.corrupt == 1 and len(r.labels) == 0
    assert f"non-finite value (nan or inf) in line 2: '{row}'" in r.msg and str(f) in r.msg


def test_class_overflowing_float32_is_corrupt(tmp_path):
    f = rect_image(tmp_path, "train", "x.png", (64, 64), (10, 10, 40, 40), 0)
    lb = tmp_path / "labels" / "train" / "x.txt"
    lb.write_text("1e39 0.5 0.5 0.2 0.2\n")
    r = verify_image_label(str(f), str(lb), nc=None)
    assert r.corrupt == 1 and "value too large in line 1: '1e39 0.5 0.5 0.2 0.2'" in r.msg
