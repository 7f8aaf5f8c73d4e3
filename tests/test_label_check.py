"""utils.dataloaders.label_check: every bad input of issue #3 is named with its reason and skipped (nan / inf values
too); the label cache (it runs no code, a foreign or broken one is rebuilt, a failed write only warns); the check
decodes images with the loader's own reader."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import utils.dataloaders.label_check as lc
from tests.fixtures_data import rect_dataset, rect_image
from utils.dataloaders.dataset import LoadImagesAndLabels, create_dataloader
from utils.dataloaders.label_check import load_labels, verify_image_label


def write_image(path: Path, w: int = 64, h: int = 48, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((h, w, 3), value, np.uint8)
    im[h // 4 : h // 2, w // 4 : w // 2] = 200  # some structure so JPEG has content to decode
    assert cv2.imwrite(str(path), im)
    return path


def write_label(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pair(root: Path, name: str, text: str | None, **kw) -> tuple[str, str]:
    """images/<name> + labels/<stem>.txt (no label file when text is None)."""
    im = write_image(root / "images" / name, **kw)
    lb = root / "labels" / (Path(name).stem + ".txt")
    if text is not None:
        write_label(lb, text)
    return str(im), str(lb)


GOOD = "0 0.5 0.5 0.25 0.5\n2 0.1 0.2 0.1 0.1\n"


def test_good_pair(tmp_path):
    r = verify_image_label(*pair(tmp_path, "a.png", GOOD, w=64, h=48), nc=3)
    assert (r.found, r.missing, r.empty, r.corrupt, r.msg) == (1, 0, 0, 0, "")
    assert r.shape == (64, 48)  # (w, h)
    assert r.labels.dtype == np.float32 and r.labels.shape == (2, 5)
    np.testing.assert_allclose(r.labels, [[0, 0.5, 0.5, 0.25, 0.5], [2, 0.1, 0.2, 0.1, 0.1]], atol=1e-7)


def test_missing_and_empty_labels_are_backgrounds(tmp_path):
    r = verify_image_label(*pair(tmp_path, "m.jpg", None))
    assert (r.missing, r.found, r.corrupt, r.labels.shape) == (1, 0, 0, (0, 5))
    r = verify_image_label(*pair(tmp_path, "e.jpg", "\n  \n"))
    assert (r.empty, r.found, r.corrupt, r.labels.shape) == (1, 0, 0, (0, 5))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("0 0.5 0.5 0.2\n", "labels require 5 columns, 4 columns detected (line 1)"),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 0.9\n", "labels require 5 columns, 6 columns detected (line 2)"),
        ("0 0.5 -0.5 0.2 0.2\n", "negative label values [-0.5]"),
        ("0 0.5 1.5 0.2 0.2\n", "non-normalized or out of bounds coordinates [1.5]"),
        ("3 0.5 0.5 0.2 0.2\n", "class 3 exceeds nc=3"),
        ("0 0.5 0.5 0.2 0.2\n1 a b c d\n", "non-numeric value in line 2"),
        ("0 0.1 0.1 0.5 0.1 0.5\n", "labels require 5 columns, 6 columns detected"),
        ("0 0.1 0.1 0.5 0.1 0.5 0.5 0.7\n", "polygon labels need a class and at least 3 x y pairs"),
    ],
)
def test_bad_labels_are_corrupt_with_reason(tmp_path, text, reason):
    im, lb = pair(tmp_path, "x.jpg", text)
    r = verify_image_label(im, lb, nc=3, prefix="train: ")
    assert r.corrupt == 1 and r.shape is None and len(r.labels) == 0
    assert r.msg.startswith(f"train: WARNING ⚠️ {im}: ignoring corrupt image/label: ")
    assert reason in r.msg


def test_class_check_only_with_nc(tmp_path):
    r = verify_image_label(*pair(tmp_path, "x.jpg", "7 0.5 0.5 0.2 0.2\n"), nc=None)
    assert r.corrupt == 0 and r.labels[0, 0] == 7


def test_duplicates_dropped_with_warning(tmp_path):
    text = "1 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n"
    im, lb = pair(tmp_path, "d.jpg", text)
    r = verify_image_label(im, lb)
    assert r.corrupt == 0 and r.found == 1
    np.testing.assert_allclose(
        r.labels, [[1, 0.5, 0.5, 0.2, 0.2], [0, 0.3, 0.3, 0.1, 0.1]]
    )  # first occurrences, in order
    assert r.msg == f"WARNING ⚠️ {im}: 2 duplicate labels removed"


def test_polygon_rows_become_boxes(tmp_path):
    text = "1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n0 0.6 0.6 0.9 0.7 0.7 0.9\n"
    r = verify_image_label(*pair(tmp_path, "p.png", text))
    assert r.corrupt == 0 and len(r.segments) == 2 and r.segments[0].shape == (4, 2)
    np.testing.assert_allclose(r.labels, [[1, 0.3, 0.4, 0.4, 0.4], [0, 0.75, 0.75, 0.3, 0.3]], atol=1e-6)


def test_corrupt_bytes(tmp_path):
    im = tmp_path / "images" / "bad.jpg"
    im.parent.mkdir(parents=True)
    im.write_bytes(os.urandom(300))
    r = verify_image_label(str(im), str(tmp_path / "labels" / "bad.txt"))
    assert r.corrupt == 1 and "cannot open image" in r.msg and str(im) in r.msg


def test_tiny_image(tmp_path):
    r = verify_image_label(*pair(tmp_path, "t.png", GOOD, w=5, h=5))
    assert r.corrupt == 1 and "image size 5x5 is below 10 pixels" in r.msg


def test_unsupported_format(tmp_path):
    im = tmp_path / "images" / "g.gif"
    im.parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 200, 10)).save(im)
    r = verify_image_label(str(im), str(tmp_path / "labels" / "g.txt"))
    assert r.corrupt == 1 and "unsupported image format 'gif'" in r.msg


def test_truncated_jpeg_is_restored(tmp_path):
    im, lb = pair(tmp_path, "trunc.jpg", GOOD, w=80, h=60)
    data = Path(im).read_bytes()
    assert data[-2:] == b"\xff\xd9"
    Path(im).write_bytes(data[:-2])  # the end-of-image marker is gone
    r = verify_image_label(im, lb)
    assert r.corrupt == 0 and r.shape == (80, 60) and len(r.labels) == 2
    assert r.msg == f"WARNING ⚠️ {im}: corrupt JPEG restored and saved"
    assert Path(im).read_bytes()[-2:] == b"\xff\xd9"
    assert verify_image_label(im, lb).msg == ""  # restored for good
    assert cv2.imread(im).shape == (60, 80, 3)


def test_exif_rotation_swaps_size(tmp_path):
    im = tmp_path / "r.jpg"
    img = Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[274] = 6  # stored rotated by 90 degrees
    img.save(im, exif=exif)
    r = verify_image_label(str(im), str(tmp_path / "r.txt"))
    assert r.shape == (20, 40) == (cv2.imread(str(im)).shape[1], cv2.imread(str(im)).shape[0])


# ------------------------------------------------------------------------------------------------ load_labels + cache
def mixed_set(root: Path) -> tuple[list[str], list[str]]:
    pairs = [
        pair(root, "a.jpg", GOOD),
        pair(root, "b.jpg", None),
        pair(root, "c.jpg", ""),
        pair(root, "d.jpg", "0 0.5 0.5 0.2\n"),
        pair(root, "e.png", GOOD, w=6, h=6),
        pair(root, "f.jpg", GOOD + "0 0.5 0.5 0.25 0.5\n"),
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_load_labels_summary_and_warnings(tmp_path, caplog):
    ims, lbs = mixed_set(tmp_path)
    ls = load_labels(ims, lbs, nc=3, prefix="val: ")
    assert ls.im_files == [ims[i] for i in (0, 1, 2, 5)] and ls.label_files == [lbs[i] for i in (0, 1, 2, 5)]
    assert ls.shapes.tolist() == [[64, 48]] * 4
    assert [len(l) for l in ls.labels] == [2, 0, 0, 2]
    assert ls.counts == dict(found=2, missing=1, empty=1, corrupt=2, total=6)
    lines = caplog.text.splitlines()
    summary = [l for l in lines if "Scanning" in l]
    assert len(summary) == 1
    assert summary[0].endswith(f"val: Scanning {tmp_path / 'labels'}... 4 images, 2 backgrounds, 2 corrupt")
    assert sum("WARNING ⚠️" in l for l in lines) == 3  # d (4 columns), e (5x5), f (duplicate)
    assert any(ims[3] in l and "4 columns detected" in l for l in lines)
    assert any(ims[5] in l and "1 duplicate labels removed" in l for l in lines)


def test_cache_written_reused_and_rebuilt(tmp_path, monkeypatch, caplog):
    ims, lbs = mixed_set(tmp_path)
    cache = tmp_path / "labels.cache"  # <labels dir>.cache like YOLOv5
    first = load_labels(ims, lbs, nc=3)
    assert cache.is_file() and not list(tmp_path.glob(".*.tmp"))
    calls = []
    real = lc.verify_image_label

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(lc, "verify_image_label", counting)
    again = load_labels(ims, lbs, nc=3)
    assert calls == []  # nothing re-verified
    assert again.im_files == first.im_files and again.counts == first.counts
    assert all(np.array_equal(a, b) for a, b in zip(again.labels, first.labels))
    assert sum("(from cache)" in l for l in caplog.text.splitlines()) == 1

    Path(lbs[0]).write_text("1 0.5 0.5 0.5 0.5\n")  # a label changes: size changes -> stale
    rebuilt = load_labels(ims, lbs, nc=3)
    assert len(calls) == 6 and rebuilt.labels[0].tolist() == [[1, 0.5, 0.5, 0.5, 0.5]]
    load_labels(ims, lbs, nc=4)  # nc is part of the key (class checks depend on it)
    assert len(calls) == 12
    load_labels(ims, lbs, nc=4)
    assert len(calls) == 12


def test_corrupt_cache_rebuilds(tmp_path):
    ims, lbs = mixed_set(tmp_path)
    (tmp_path / "labels.cache").write_bytes(b"not a torch file")
    ls = load_labels(ims, lbs, nc=3)
    assert len(ls.im_files) == 4
    with np.load(tmp_path / "labels.cache", allow_pickle=False) as z:  # plain arrays, no pickle
        assert json.loads(z["meta"].tobytes())["hash"] == ls.hash


def test_unwritable_cache_only_warns(tmp_path, monkeypatch, caplog):
    ims, lbs = mixed_set(tmp_path)

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lc, "_save_arrays", deny)  # as root a chmod 555 folder is still writable: fail the write
    ls = load_labels(ims, lbs, nc=3)
    assert len(ls.im_files) == 4 and not (tmp_path / "labels.cache").exists()
    assert f"cache directory {tmp_path} is not writeable, cache not saved" in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))


def test_find_images_walk_like_rglob_and_hash_one_stat(tmp_path):
    import os

    from utils.dataloaders.dataset import find_images
    from utils.dataloaders.label_check import files_hash

    imgs = tmp_path / "images"
    (imgs / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for f in (
        imgs / "a.JPG",
        imgs / "sub" / "b.png",
        imgs / "sub" / "deeper" / "c.jpeg",
        imgs / ".hidden.png",
        tmp_path / "elsewhere" / "x.jpg",
        imgs / "sub" / "notes.txt",
        imgs / "sub" / "weird.jpg.bak",
    ):
        f.write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere" / "x.jpg", imgs / "link.jpg")  # a symlinked file is an image
    os.symlink(tmp_path / "elsewhere", imgs / "linked_dir")  # a symlinked folder is not entered (as rglob)
    os.symlink(tmp_path / "gone.jpg", imgs / "broken.jpg")  # a dangling link is no file
    expected = sorted(
        os.path.normpath(str(f))
        for f in imgs.rglob("*")
        if f.is_file() and f.suffix[1:].lower() in ("jpg", "jpeg", "png")
    )
    assert find_images(imgs) == expected and len(expected) == 5
    # hash: path + size; a missing file or a folder counts as size -1 (as os.path.isfile + getsize did)
    h = files_hash([str(imgs / "a.JPG")], [str(imgs / "nope.txt"), str(imgs / "sub")])
    import hashlib

    ref = hashlib.sha256()
    for p, size in ((imgs / "a.JPG", 1), (imgs / "nope.txt", -1), (imgs / "sub", -1)):
        ref.update(f"{p}\0{size}\n".encode())
    assert h == ref.hexdigest()


# ----------------------------------------------------------------------------------------- the label cache runs no code
def _files(d: Path) -> tuple[list[str], list[str]]:
    ims = sorted(str(f) for f in d.iterdir() if f.suffix == ".png")
    return ims, [f.replace("/images/", "/labels/").replace(".png", ".txt") for f in ims]


class _Marker:
    """Unpickling this object opens (creates) the marker file: a stand-in for any code a hostile pickle runs."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_hostile_cache_runs_no_code_and_is_rebuilt(tmp_path, caplog, writer):
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
    warned = [line for line in caplog.text.splitlines() if "label cache" in line]
    assert len(warned) == 1 and str(cache) in warned[0] and "rebuilding" in warned[0]
    with np.load(cache, allow_pickle=False) as z:  # replaced by plain arrays
        assert json.loads(z["meta"].tobytes())["im_files"] == ds.im_files
    caplog.clear()
    assert LoadImagesAndLabels(d, 128).n == 3 and "(from cache)" in caplog.text and "label cache" not in caplog.text


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
def test_foreign_or_inconsistent_npz_cache_is_rebuilt(tmp_path, caplog, bad):
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
    caplog.clear()
    again = load_labels(ims, lbs, nc=None)
    assert again.im_files == ls.im_files and all(np.array_equal(a, b) for a, b in zip(again.labels, ls.labels))
    assert sum(str(cache) in line and "rebuilding" in line for line in caplog.text.splitlines()) == 1
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("File labels.cache cannot be opened."),
        PermissionError(13, "Permission denied"),
        OSError(errno.ENOSPC, "No space left"),
    ],
)
def test_cache_write_failure_warns_and_run_goes_on(tmp_path, monkeypatch, caplog, exc):
    d = rect_dataset(tmp_path, 3)

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(torch, "save", fail)  # the old writer (torch.save raises RuntimeError on a read-only dir)
    monkeypatch.setattr(lc, "_save_arrays", fail, raising=False)
    loader, ds = create_dataloader(d, 128, 2, 32, workers=0)
    assert ds.n == 3 and sum(len(b[2]) for b in loader) == 3
    assert f"cache directory {tmp_path / 'labels'} is not writeable, cache not saved" in caplog.text
    assert not list((tmp_path / "labels").glob("*.cache")) and not list((tmp_path / "labels").glob(".*.tmp"))


# --------------------------------------------------------------------------- the check decodes with the loader's reader
def test_float_tiff_is_corrupt_at_scan_and_the_run_completes(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3)
    Image.fromarray(np.random.default_rng(0).random((40, 50), np.float32), "F").save(d / "float.tif")
    (tmp_path / "labels" / "train" / "float.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert Image.open(d / "float.tif").mode == "F"  # PIL opens it; OpenCV cannot read it as 8-bit colour
    r = verify_image_label(str(d / "float.tif"), str(tmp_path / "labels" / "train" / "float.txt"))
    assert r.corrupt == 1 and "OpenCV cannot decode this TIFF (PIL mode 'F')" in r.msg
    loader, ds = create_dataloader(d, 128, 2, 32, workers=0)
    assert ds.n == 3 and sum(len(b[2]) for b in loader) == 3
    assert "3 images, 0 backgrounds, 1 corrupt" in caplog.text


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


# ----------------------------------------------------------------------------------------------------- nan / inf labels
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
