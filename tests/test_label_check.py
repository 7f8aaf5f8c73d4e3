"""utils.dataloaders.label_check: every bad input of issue #3 is named with its reason and skipped; the label cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import utils.dataloaders.label_check as lc
from utils.dataloaders.label_check import load_labels, verify_image_label


@pytest.fixture
def ylog(caplog):
    """caplog that sees the project logger (it does not propagate to the root logger)."""
    from utils.core.log import LOGGER

    LOGGER.addHandler(caplog.handler)
    yield caplog
    LOGGER.removeHandler(caplog.handler)


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


def test_load_labels_summary_and_warnings(tmp_path, ylog):
    ims, lbs = mixed_set(tmp_path)
    ls = load_labels(ims, lbs, nc=3, prefix="val: ")
    assert ls.im_files == [ims[i] for i in (0, 1, 2, 5)] and ls.label_files == [lbs[i] for i in (0, 1, 2, 5)]
    assert ls.shapes.tolist() == [[64, 48]] * 4
    assert [len(l) for l in ls.labels] == [2, 0, 0, 2]
    assert ls.counts == dict(found=2, missing=1, empty=1, corrupt=2, total=6)
    lines = ylog.text.splitlines()
    summary = [l for l in lines if "Scanning" in l]
    assert len(summary) == 1
    assert summary[0].endswith(f"val: Scanning {tmp_path / 'labels'}... 4 images, 2 backgrounds, 2 corrupt")
    assert sum("WARNING ⚠️" in l for l in lines) == 3  # d (4 columns), e (5x5), f (duplicate)
    assert any(ims[3] in l and "4 columns detected" in l for l in lines)
    assert any(ims[5] in l and "1 duplicate labels removed" in l for l in lines)


def test_cache_written_reused_and_rebuilt(tmp_path, monkeypatch, ylog):
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
    assert sum("(from cache)" in l for l in ylog.text.splitlines()) == 1

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


def test_unwritable_cache_only_warns(tmp_path, monkeypatch, ylog):
    ims, lbs = mixed_set(tmp_path)

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lc, "_save_arrays", deny)  # as root a chmod 555 folder is still writable: fail the write
    ls = load_labels(ims, lbs, nc=3)
    assert len(ls.im_files) == 4 and not (tmp_path / "labels.cache").exists()
    assert f"cache directory {tmp_path} is not writeable, cache not saved" in ylog.text
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
