"""utils.dataloaders.mosaic: the one-step mosaic draws the same random numbers and gives exactly the reference path's
boxes (mosaic4 + random_perspective); its pixels sit within a pixel of the reference's, with no gaps; other matrices
fall back to the reference itself. Dataset level: fast and reference loaders agree; reduced JPEG decoding."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from benchmarks.reference import CanvasMosaicDataset
from tests.fixtures_data import PALETTE, check_labels, mosaic_inputs, pixel_box
from utils.dataloaders.augment import apply_hsv, hsv_luts, mosaic4, random_perspective
from utils.dataloaders.dataset import LoadImagesAndLabels, chw_rgb
from utils.dataloaders.mosaic import mosaic_perspective

S = 128
AXIS = dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0)  # hyp.scratch-low's geometry


def _sources(src_scale: float) -> tuple[list[np.ndarray], list[tuple[int, int]], list[np.ndarray], list[list]]:
    """The test scenes as 'decoded' images at `src_scale` x their mosaic size (nearest: colours stay pure)."""
    ims, lbs, segs = mosaic_inputs(S)
    src = [cv2.resize(im, None, fx=src_scale, fy=src_scale, interpolation=cv2.INTER_NEAREST) for im in ims]
    return src, [im.shape[:2] for im in ims], lbs, segs


def _both(seed: int, src_scale: float, use_segments: bool = False, **hyp) -> tuple:
    """(fast image, fast boxes, reference image, reference boxes, RNG states after each) for one seed."""
    src, sizes, lbs, segs = _sources(src_scale)
    segs = segs if use_segments else [[] for _ in segs]
    random.seed(seed)
    fast, fast_lb = mosaic_perspective(src, sizes, lbs, segs, S, **hyp)
    state_fast = random.getstate()
    random.seed(seed)
    resized = [cv2.resize(im, hw[::-1], interpolation=cv2.INTER_LINEAR) for im, hw in zip(src, sizes)]
    img4, lb4, sg4 = mosaic4(resized, lbs, S, segs)
    ref, ref_lb = random_perspective(img4, lb4, sg4, border=(-S // 2, -S // 2), **hyp)
    return fast, fast_lb, ref, ref_lb, state_fast, random.getstate()


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])  # sources as cached, smaller (upscaled) and larger (shrunk)
@pytest.mark.parametrize("use_segments", [False, True])
def test_same_draws_give_exactly_the_reference_boxes(scale, use_segments):
    for seed in range(10):
        _, fast_lb, _, ref_lb, st_fast, st_ref = _both(seed, scale, use_segments, **AXIS)
        assert np.array_equal(fast_lb, ref_lb) and fast_lb.dtype == ref_lb.dtype
        assert st_fast == st_ref  # the same random numbers were drawn, no more, no fewer


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_pixels_within_a_pixel_of_the_reference_and_of_the_boxes(scale):
    compared = 0
    for seed in range(10):
        fast, labels, ref, _, _, _ = _both(seed, scale, **AXIS)
        assert fast.shape == ref.shape == (S, S, 3)
        for c in range(len(PALETTE)):
            a, b = pixel_box(fast, c), pixel_box(ref, c)
            assert (a is None) == (b is None) or max(np.ptp(x[[0, 2]]) for x in (a, b) if x is not None) <= 3
            if a is not None and b is not None:
                assert np.abs(a - b).max() <= 1, f"seed {seed} class {c}: fast {a} vs reference {b}"
                compared += 1
        if scale >= 1:  # a nearest-neighbour halving moves rectangle edges by up to 2 mosaic px in the source
            check_labels(fast, labels, interior_only=False)
    assert compared >= 30


@pytest.mark.parametrize("src_scale", [1.0, 0.37, 2.6])
def test_no_grey_gaps_between_or_inside_tiles(src_scale):
    # uniform tiles of a colour whose blends with the grey fill are never grey: any grey pixel in the fast image
    # where the reference has none is a gap (allowed: within a pixel of the reference's grey border)
    kernel = np.ones((3, 3), np.uint8)
    sizes = [(128, 96), (96, 128), (128, 128), (80, 128)]
    src = [np.full((round(h * src_scale), round(w * src_scale), 3), (0, 200, 50), np.uint8) for h, w in sizes]
    none = [np.zeros((0, 5), np.float32)] * 4
    for seed in range(20):
        random.seed(seed)
        fast, _ = mosaic_perspective(src, sizes, none, [[]] * 4, S, **AXIS)
        random.seed(seed)
        resized = [cv2.resize(im, hw[::-1], interpolation=cv2.INTER_LINEAR) for im, hw in zip(src, sizes)]
        ref, _ = random_perspective(*mosaic4(resized, none, S), border=(-S // 2, -S // 2), **AXIS)
        grey_f, grey_r = [(x == 114).all(2).astype(np.uint8) for x in (fast, ref)]
        edge = cv2.dilate(grey_r, kernel) - cv2.erode(grey_r, kernel)
        assert not ((grey_f != grey_r) & (edge == 0)).any(), f"seed {seed}: grey where the reference has none"
        assert grey_r.sum() == 0 or abs(int(grey_f.sum()) - int(grey_r.sum())) <= 2 * S  # at most a line apart


@pytest.mark.parametrize("hyp", [dict(AXIS, degrees=10.0), dict(AXIS, shear=3.0), dict(AXIS, perspective=0.0005)])
def test_rotation_shear_perspective_fall_back_to_the_reference(hyp):
    for seed in range(4):
        fast, fast_lb, ref, ref_lb, _, _ = _both(seed, 1.0, **hyp)
        assert np.array_equal(fast, ref) and np.array_equal(fast_lb, ref_lb)


@pytest.mark.parametrize("src_scale", [1.0, 0.5, 2.0])
def test_hsv_in_the_tiles_matches_hsv_of_the_result(src_scale):
    for seed in range(6):
        np.random.seed(seed)
        luts = hsv_luts(0.015, 0.7, 0.4)
        src, sizes, lbs, segs = _sources(src_scale)
        random.seed(seed)
        fast, fast_lb = mosaic_perspective(src, sizes, lbs, [[]] * 4, S, hsv=luts, **AXIS)
        _, _, ref, ref_lb, _, _ = _both(seed, src_scale, **AXIS)  # reference, without the jitter yet
        ref = apply_hsv(ref, luts)
        assert np.array_equal(fast_lb, ref_lb)
        grey = apply_hsv(np.full((1, 1, 3), 114, np.uint8), luts)[0, 0]
        fill_f, fill_r = [(x == grey).all(2) for x in (fast, ref)]
        assert abs(int(fill_f.sum()) - int(fill_r.sum())) <= 2 * S  # the fill is the jittered grey
        assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 6  # flat colours agree; edges may differ
        for c in range(len(PALETTE)):  # the jittered colours are where the reference has them, within a pixel
            target = apply_hsv(np.array([[PALETTE[c]]], np.uint8), luts)[0, 0]
            a, b = [np.argwhere(np.abs(x.astype(int) - target).max(2) <= 3) for x in (fast, ref)]
            if len(a) > 20 and len(b) > 20:
                assert np.abs(a.min(0) - b.min(0)).max() <= 1 and np.abs(a.max(0) - b.max(0)).max() <= 1


def _jpeg_dataset(root, n: int = 4, wh: tuple[int, int] = (600, 400)) -> tuple:
    """n large JPEGs with one solid rectangle each (grey-free black background) and their labels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    w, h = wh
    for i in range(n):
        im = np.zeros((h, w, 3), np.uint8)
        x1, y1, x2, y2 = 60 + 40 * i, 50 + 20 * i, 300 + 40 * i, 250 + 20 * i
        im[y1:y2, x1:x2] = PALETTE[i]
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), im, [cv2.IMWRITE_JPEG_QUALITY, 98])
        (root / "labels" / f"{i}.txt").write_text(
            f"{i} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
        )
    return root / "images"


HYP = dict(mosaic=1.0, mixup=0.0, copy_paste=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, flipud=0.0, fliplr=0.5, **AXIS)


@pytest.mark.parametrize("hsv", [0.0, 0.5])
def test_dataset_fast_and_reference_mosaics_agree(tmp_path, hsv):
    images, hyp = _jpeg_dataset(tmp_path), {**HYP, "hsv_h": hsv * 0.03, "hsv_s": hsv, "hsv_v": hsv}
    fast_ds = LoadImagesAndLabels(images, S, augment=True, hyp=hyp)
    ref_ds = CanvasMosaicDataset(images, S, augment=True, hyp=hyp)  # the reference canvas + warp
    for i in range(8):
        out = []
        for ds in (fast_ds, ref_ds):
            random.seed(i)
            np.random.seed(i)
            out.append((ds[i % ds.n], random.getstate(), np.random.get_state()[1].copy()))
        ((a, la, _, _), py_a, np_a), ((b, lb, _, _), py_b, np_b) = out
        assert a.shape == b.shape == (3, S, S) and np.array_equal(la.numpy(), lb.numpy())
        assert py_a == py_b and np.array_equal(np_a, np_b)  # both paths drew the same random numbers
        assert np.abs(a.float() - b.float()).mean() < 4  # same content, resampled once instead of twice


def test_big_jpegs_decode_reduced_in_training_only(tmp_path):
    images = _jpeg_dataset(tmp_path)
    train = LoadImagesAndLabels(images, 128, augment=True, hyp=HYP)
    val = LoadImagesAndLabels(images, 128)
    assert train._reduce_factor(0) == 4 and val._reduce_factor(0) == 1  # 600 >= 4 * 128; validation: full
    assert train._decode(0)[0].shape == (100, 150, 3) and train._decode(0)[1] == (400, 600)
    im_t, hw0_t, hw_t = train.load_image(0)
    im_v, hw0_v, hw_v = val.load_image(0)
    assert hw0_t == hw0_v == (400, 600) and hw_t == hw_v == im_t.shape[:2] == (86, 128)
    assert np.abs(im_t.astype(int) - im_v.astype(int)).mean() < 3
    train.mosaic = False  # letterboxed training samples: boxes still on their pixels
    for i in range(train.n):
        im, lb, _, shapes = train[i]
        assert shapes[0] == (400, 600)
        check_labels(
            np.ascontiguousarray(im.numpy().transpose(1, 2, 0)[..., ::-1]),
            np.concatenate([lb[:, 1:2].numpy(), _xyxy(lb[:, 2:].numpy() * 128)], 1),
            False,
        )


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)


def test_chw_rgb_is_the_transposed_channel_swap():
    im = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    out = chw_rgb(im)
    assert out.flags.c_contiguous and np.array_equal(out, im.transpose(2, 0, 1)[::-1])
