"""utils/dataloaders/augment: boxes stay consistent with pixels through mosaic + perspective; letterbox numbers
(extreme aspect ratios too); HSV, mixup, copy-paste, flips, box filtering, determinism under seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.fixtures_data import PALETTE, check_labels, mosaic_inputs, palette_scene, pixel_box
from utils.dataloaders.augment import (
    augment_hsv,
    box_candidates,
    copy_paste,
    flip_lr,
    flip_ud,
    letterbox,
    mixup,
    mosaic4,
    random_perspective,
)


def _mosaic_then_perspective(seed: int, use_segments: bool = False, **hyp) -> tuple[np.ndarray, np.ndarray]:
    random.seed(seed)
    np.random.seed(seed)
    s = 128
    ims, lbs, segs = mosaic_inputs(s)
    img4, labels4, segments4 = mosaic4(ims, lbs, s, segs)
    return random_perspective(img4, labels4, segments4 if use_segments else (), border=(-s // 2, -s // 2), **hyp)


def test_mosaic_alone_labels_match_pixels():
    for seed in range(6):
        random.seed(seed)
        ims, lbs, segs = mosaic_inputs(128)
        img4, labels4, segments4 = mosaic4(ims, lbs, 128, segs)
        assert img4.shape == (256, 256, 3) and labels4.shape == (7, 5) and len(segments4) == 7
        assert (labels4[:, 1:] >= 0).all() and (labels4[:, 1:] <= 256).all()
        visible = labels4[(labels4[:, 3] > labels4[:, 1]) & (labels4[:, 4] > labels4[:, 2])]
        assert check_labels(img4, visible, interior_only=False) == len(visible) >= 4
        for lb, sg in zip(labels4, segments4):  # segments moved with their boxes
            assert np.allclose(np.clip(sg.min(0), 0, 256), lb[1:3]) and np.allclose(sg.max(0), lb[3:5])


def test_mosaic_centre_range_and_grey_fill():
    centres = []
    for seed in range(40):
        random.seed(seed)
        img4, _, _ = mosaic4([np.zeros((128, 128, 3), np.uint8)] * 4, [np.zeros((0, 5))] * 4, 128)
        assert set(np.unique(img4)) <= {0, 114}
        # the 4 black tiles form the square [c - 128, c + 128] around the centre, cut at the canvas; grey elsewhere
        ys, xs = np.nonzero(img4[..., 0] == 0)
        xc = xs.min() + 128 if xs.min() > 0 else xs.max() + 1 - 128
        yc = ys.min() + 128 if ys.min() > 0 else ys.max() + 1 - 128
        assert 64 <= xc <= 192 and 64 <= yc <= 192  # [s/2, 3s/2]
        assert (img4[yc - 1, xc - 1] == 0).all() and (img4[yc, xc] == 0).all()
        centres.append((xc, yc))
    assert len(set(centres)) > 30


def test_perspective_scale_translate_labels_match_pixels():
    compared = 0
    for seed in range(8):
        im, labels = _mosaic_then_perspective(seed, degrees=0, translate=0.1, scale=0.3, shear=0, perspective=0)
        assert im.shape == (128, 128, 3)
        compared += check_labels(im, labels, interior_only=False)
    assert compared >= 15  # enough boxes survive for the check to mean something


WARPS = [
    dict(degrees=0, translate=0.1, scale=0.2, shear=3, perspective=0),
    dict(degrees=0, translate=0.1, scale=0.2, shear=0, perspective=0.0005),
    dict(degrees=30, translate=0.1, scale=0.2, shear=0, perspective=0),
]


@pytest.mark.parametrize("hyp", WARPS)
@pytest.mark.parametrize("use_segments", [False, True])
def test_mosaic_perspective_shear_rotation_labels_match_pixels(hyp, use_segments):
    # the label is the box of the warped rectangle (corners or polygon); for shapes entirely in view it must be
    # the box of that colour's pixels
    compared = sum(
        check_labels(*_mosaic_then_perspective(seed, use_segments, **hyp), interior_only=True) for seed in range(16)
    )
    assert compared >= 8


@pytest.mark.parametrize("hyp", WARPS)
@pytest.mark.parametrize("use_segments", [False, True])
def test_perspective_shear_rotation_many_boxes(hyp, use_segments):
    # one image with 7 small rectangles well inside it: nearly all stay in view, so every warp is checked many times
    rects = [
        (c, 24 + 28 * (c % 3), 20 + 32 * (c // 3), 40 + 28 * (c % 3) + 2 * c, 34 + 32 * (c // 3)) for c in range(7)
    ]
    im, lb = palette_scene(128, 128, rects)
    segs = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32) for _, x1, y1, x2, y2 in rects]
    compared = 0
    for seed in range(6):
        random.seed(seed)
        out, t = random_perspective(im, lb, segs if use_segments else (), **hyp)
        compared += check_labels(out, t, interior_only=True)
    assert compared >= 30


def test_rotation_box_grows_to_rotated_rectangle():
    # no scale/translate: a 40x20 rectangle turned by angle a has the box 40|cos a| + 20|sin a| wide
    im, lb = palette_scene(128, 128, [(0, 44, 54, 84, 74)])
    for seed in range(5):
        random.seed(seed)
        out, t = random_perspective(im, lb, degrees=45, translate=0, scale=0, shear=0)
        random.seed(seed)
        random.uniform(0, 0), random.uniform(0, 0)  # the two perspective draws come first
        a = np.radians(random.uniform(-45, 45))
        w, h = 40 * abs(np.cos(a)) + 20 * abs(np.sin(a)), 40 * abs(np.sin(a)) + 20 * abs(np.cos(a))
        assert np.allclose(t[0, 1:], [64 - w / 2, 64 - h / 2, 64 + w / 2, 64 + h / 2], atol=1e-3)
        assert check_labels(out, t, interior_only=True) == 1


def test_random_perspective_drops_boxes_pushed_out():
    im, lb = palette_scene(64, 64, [(0, 0, 0, 10, 10), (1, 20, 20, 44, 44)])
    random.seed(0)
    # border=(-16,-16): output is the central 32x32 (M = identity translation): the corner box is cut away
    out, t = random_perspective(im, lb, degrees=0, translate=0, scale=0, shear=0, border=(-16, -16))
    assert out.shape == (32, 32, 3)
    assert t[:, 0].tolist() == [1.0] and np.allclose(t[0, 1:], [4, 4, 28, 28])


def test_box_candidates_cases():
    before = np.array([[0, 0, 100, 100]] * 5, np.float32).T
    after = np.array(
        [
            [0, 0, 100, 100],  # unchanged: kept
            [0, 0, 2, 50],  # 2 px wide: not wider than wh_thr
            [0, 0, 30, 30],  # 9% of the area: below area_thr 0.1
            [0, 0, 35, 35],  # 12%: kept
            [0, 0, 1000, 3],
        ],
        np.float32,
    ).T  # aspect 333 > ar_thr 100
    assert box_candidates(before, after).tolist() == [True, False, False, True, False]
    assert box_candidates(before, after, area_thr=0.01).tolist() == [True, False, True, True, False]
    assert box_candidates(before, after, ar_thr=1000).tolist() == [True, False, False, True, True]


@pytest.mark.parametrize(
    "kw, shape, ratio, pad",
    [
        (dict(auto=False), (64, 64), (0.32, 0.32), (0.0, 16.0)),
        (dict(auto=True), (32, 64), (0.32, 0.32), (0.0, 0.0)),
        (dict(auto=False, scale_fill=True), (64, 64), (0.32, 0.64), (0.0, 0.0)),
    ],
)
def test_letterbox_numbers(kw, shape, ratio, pad):
    im = np.full((100, 200, 3), 7, np.uint8)
    out, r, p = letterbox(im, 64, stride=32, **kw)
    assert out.shape[:2] == shape and np.allclose(r, ratio) and np.allclose(p, pad)
    if pad[1]:
        assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 7).all()


def test_letterbox_no_scaleup_pads_odd():
    im = np.full((30, 41, 3), 7, np.uint8)
    out, r, (dw, dh) = letterbox(im, 64, auto=False, scaleup=False)
    assert out.shape == (64, 64, 3) and r == (1.0, 1.0) and (dw, dh) == (11.5, 17.0)
    assert (out[17:47, 11:52] == 7).all() and (out[:17] == 114).all() and (out[:, :11] == 114).all()


@pytest.mark.parametrize("hw", [(2, 3000), (3000, 1), (1, 1)])
def test_letterbox_extreme_aspect_ratios(hw):
    im = np.full((*hw, 3), 50, np.uint8)
    a, ratio, pad = letterbox(im, 640, auto=True, stride=32)
    assert a.shape[0] % 32 == 0 and a.shape[1] % 32 == 0 and max(a.shape[:2]) == 640
    b, _, _ = letterbox(im, 640, auto=False)
    assert b.shape == (640, 640, 3) and (b == 50).any()  # the image (at least one row/column) is in there
    c, _, _ = letterbox(im, (64, 96), auto=False, scaleup=False)
    assert c.shape == (64, 96, 3)


def test_augment_hsv():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    ref = im.copy()
    augment_hsv(im, 0, 0, 0)
    assert np.array_equal(im, ref)
    np.random.seed(1)
    augment_hsv(im, 0.015, 0.7, 0.4)
    assert not np.array_equal(im, ref) and im.dtype == np.uint8 and im.shape == ref.shape
    im2 = ref.copy()
    np.random.seed(1)
    augment_hsv(im2, 0.015, 0.7, 0.4)
    assert np.array_equal(im, im2)  # seeded: same result
    dark = ref.copy()  # value gain only: brightness scales by the factor drawn from [0.6, 1.4]
    np.random.seed(3)
    r = np.random.uniform(-1, 1, 3)[2] * 0.4 + 1
    np.random.seed(3)
    augment_hsv(dark, 0, 0, 0.4)
    assert abs(dark.max(2).mean() / ref.max(2).mean() - r) < 0.05


def test_mixup_ratio_and_labels():
    a, b = np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)
    la, lb = np.array([[0, 1, 1, 5, 5]], np.float32), np.array([[1, 2, 2, 9, 9], [2, 3, 3, 8, 8]], np.float32)
    np.random.seed(0)
    r = np.random.beta(32, 32)
    np.random.seed(0)
    out, labels = mixup(a, la, b, lb)
    assert labels.shape == (3, 5) and labels[:, 0].tolist() == [0, 1, 2]
    assert np.all(np.abs(out.astype(float) - 200 * (1 - r)) <= 1)
    ratios = [mixup(a, la, b, lb)[0][0, 0, 0] / 200 for _ in range(50)]
    assert 0.3 < min(ratios) and max(ratios) < 0.7 and abs(np.mean(ratios) - 0.5) < 0.04  # Beta(32,32)


def test_copy_paste_identity_and_mirror():
    # 96 px wide: object 0 mirrors to x 66..86 and object 1 to x 6..36 (both onto free space: pasted); object 2 is
    # symmetric about the centre line, its mirror covers itself (ioa 1 >= 0.30: refused)
    im, lb = palette_scene(64, 96, [(0, 10, 30, 30, 55), (1, 60, 5, 90, 20), (2, 40, 40, 56, 60)])
    segs = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32) for _, x1, y1, x2, y2 in lb]
    out, labels, s2 = copy_paste(im, lb, segs, p=0.0)
    assert out is im and labels is lb and s2 is segs
    random.seed(0)
    out, labels, s2 = copy_paste(im.copy(), lb, segs, p=1.0)
    assert len(labels) == len(s2) == 5 and np.array_equal(labels[:3], lb)
    added = {int(r[0]): r[1:].tolist() for r in labels[3:]}
    assert added == {0: [66, 30, 86, 55], 1: [6, 5, 36, 20]}
    for lab, sg in zip(labels[3:], s2[3:]):  # the new polygons are the mirrored ones
        assert np.allclose(sg.min(0), lab[1:3]) and np.allclose(sg.max(0), lab[3:5])
    assert pixel_box(out[:, :48], 1).tolist() == [6, 5, 36, 20]  # pasted pixels are the mirrored objects
    assert (pixel_box(out[:, 48:], 0) + [48, 0, 48, 0]).tolist() == [66, 30, 86, 55]
    expected = im.copy()
    expected[5:20, 6:36], expected[30:55, 66:86] = PALETTE[1], PALETTE[0]
    assert np.array_equal(out, expected)  # nothing else touched (object 2 not pasted over itself)


def test_flips_map_labels_to_pixels():
    im, lb = palette_scene(40, 80, [(2, 10, 5, 30, 15)])
    xywhn = np.array([[2, 20 / 80, 10 / 40, 20 / 80, 10 / 40]], np.float32)
    for flip, box in ((flip_lr, [50, 5, 70, 15]), (flip_ud, [10, 25, 30, 35])):
        out, lab = flip(im, xywhn)
        cx, cy, w, h = lab[0, 1] * 80, lab[0, 2] * 40, lab[0, 3] * 80, lab[0, 4] * 40
        assert np.allclose([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], box)
        assert np.array_equal(pixel_box(out, 2), box)
    assert xywhn[0, 1] == 0.25 and pixel_box(im, 2).tolist() == [10, 5, 30, 15]  # inputs untouched


def test_seeded_pipeline_is_deterministic():
    hyp = dict(degrees=10, translate=0.1, scale=0.5, shear=2, perspective=0.0001)
    im1, t1 = _mosaic_then_perspective(123, **hyp)
    im2, t2 = _mosaic_then_perspective(123, **hyp)
    im3, t3 = _mosaic_then_perspective(124, **hyp)
    assert np.array_equal(im1, im2) and np.array_equal(t1, t2)
    assert not np.array_equal(im1, im3)
