"""utils.dataloaders.dataset: path forms, bad input, rect shapes, collate, labels vs pixels (plain and mosaic),
workers, caches; an image that vanishes after the scan is skipped (validation) or replaced (training)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from tests.fixtures_data import COLOURS, rect_dataset, rect_image
from utils.core.boxes import scale_boxes, xywh2xyxy
from utils.core.errors import UserError
from utils.dataloaders.dataset import LoadImagesAndLabels, create_dataloader, find_images, img2label_paths


def pixel_boxes(img: np.ndarray, colour: tuple[int, int, int]) -> list[np.ndarray]:
    """xyxy extents of the connected regions of one colour in an (H, W, 3) RGB image (tolerant to blended edges)."""
    mask = (np.abs(img.astype(int) - np.array(colour)) < 60).all(2).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return [np.array([x, y, x + w, y + h], float) for x, y, w, h, _ in stats[1:n]]


def assert_labels_match_pixels(img_t: torch.Tensor, labels: torch.Tensor, tol: float, cut_ok: bool = False) -> int:
    """Every label's xyxy box equals the extent of one region of its class colour within tol px; returns #labels.

    cut_ok: a rotated/sheared box cut by the image border is the clipped box of the whole warped rectangle, so it
    may be larger than the visible part (YOLOv5 semantics): there it must only contain one region (within tol).
    """
    img = img_t.permute(1, 2, 0).numpy()  # RGB
    h, w = img.shape[:2]
    for row in labels:
        cls, box = int(row[1]), xywh2xyxy(row[2:6].numpy() * np.array([w, h, w, h]))
        regions = pixel_boxes(img, COLOURS[cls][::-1])  # images were written as BGR tuples
        err = min((np.abs(r - box).max() for r in regions), default=np.inf)
        cut = box[0] < 0.5 or box[1] < 0.5 or box[2] > w - 0.5 or box[3] > h - 0.5
        if cut_ok and cut:
            outside = [max(box[0] - r[0], box[1] - r[1], r[2] - box[2], r[3] - box[3]) for r in regions]
            assert min(outside, default=np.inf) <= tol, f"class {cls} box {box.round(1)} vs {regions}"
        else:
            assert err <= tol, f"class {cls} box {box.round(1)} vs pixel regions {[r.tolist() for r in regions]}"
    return len(labels)


# ------------------------------------------------------------------------------------------------ paths
def test_img2label_paths():
    assert img2label_paths(["/d/images/a/images/x.JPG", "/d/imgs/y.png"]) == [
        "/d/images/a/labels/x.txt",
        "/d/imgs/y.txt",
    ]


def test_path_forms(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3)
    (d / "notes.gif").write_bytes(b"GIF89a")
    (tmp_path / "list.txt").write_text("./images/train/000.png\n\n./images/train/002.png\n")
    assert find_images(tmp_path / "list.txt") == [str(d / "000.png"), str(d / "002.png")]
    assert find_images(d / "001.png") == [str(d / "001.png")]
    assert find_images([d / "001.png", tmp_path / "list.txt"]) == [str(d / f"00{i}.png") for i in range(3)]
    assert find_images(tmp_path) == [str(d / f"00{i}.png") for i in range(3)]  # recursive
    assert "1 files with unsupported extensions skipped (e.g. " in caplog.text and "notes.gif" in caplog.text
    with pytest.raises(UserError, match=f"dataset path not found: {tmp_path / 'nope'}"):
        LoadImagesAndLabels(tmp_path / "nope", 128)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(UserError, match="no images found in .*empty — supported formats: bmp, dng, jpeg"):
        LoadImagesAndLabels(tmp_path / "empty", 128)


def test_missing_images_directory_via_yaml(tmp_path):
    (tmp_path / "d.yaml").write_text(
        yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/train", "names": ["a"]})
    )
    with pytest.raises(UserError, match="images/train"):
        create_dataloader(str(tmp_path / "images" / "train"), 64, 2, 32, workers=0)


def test_coco128_layout_loads_unchanged(tmp_path):
    from utils.dataloaders.data_yaml import check_dataset

    root = tmp_path / "coco128"
    for i, (wh, box, cls) in enumerate([((160, 120), (10, 20, 60, 70), 0), ((100, 150), (30, 30, 90, 140), 2)]):
        rect_image(root, "train2017", f"00000000000{i}.jpg", wh, box, cls)
    (tmp_path / "coco128.yaml").write_text(
        yaml.safe_dump(
            {
                "path": str(root),
                "train": "images/train2017",
                "val": "images/train2017",
                "names": {0: "a", 1: "b", 2: "c"},
            }
        )
    )
    data = check_dataset(str(tmp_path / "coco128.yaml"))
    ds = LoadImagesAndLabels(data["train"], 160)
    assert ds.n == 2 and ds.shapes.tolist() == [[160, 120], [100, 150]]
    assert (root / "labels" / "train2017.cache").is_file()
    np.testing.assert_allclose(ds.labels[1], [[2, 0.6, 85 / 150, 0.6, 110 / 150]], rtol=1e-6)


def test_bad_files_skipped_good_still_load(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3)
    (d / "bad.jpg").write_bytes(b"\x00garbage" * 20)
    rect_image(tmp_path, "train", "small.png", (6, 6), (1, 1, 4, 4), 0)
    rect_image(tmp_path, "train", "cols.png", (64, 64), (1, 1, 40, 40), 0)
    (tmp_path / "labels" / "train" / "cols.txt").write_text("0 0.5 0.5 0.5\n")
    rect_image(tmp_path, "train", "neg.png", (64, 64), (1, 1, 40, 40), 0)
    (tmp_path / "labels" / "train" / "neg.txt").write_text("0 -0.5 0.5 0.5 0.5\n")
    rect_image(tmp_path, "train", "big.png", (64, 64), (1, 1, 40, 40), 0)
    (tmp_path / "labels" / "train" / "big.txt").write_text("0 1.5 0.5 0.5 0.5\n")
    rect_image(tmp_path, "train", "cls.png", (64, 64), (1, 1, 40, 40), 5)
    rect_image(tmp_path, "train", "empty.png", (64, 64), (1, 1, 40, 40), 0, label=False)
    (tmp_path / "labels" / "train" / "empty.txt").write_text("")
    ds = LoadImagesAndLabels(d, 128, nc=3)
    assert sorted(Path(f).name for f in ds.im_files) == ["000.png", "001.png", "002.png", "empty.png"]
    assert "4 images, 1 backgrounds, 6 corrupt" in caplog.text
    for name, why in [
        ("bad.jpg", "cannot open image"),
        ("small.png", "below 10 pixels"),
        ("cols.png", "4 columns"),
        ("neg.png", "negative"),
        ("big.png", "out of bounds"),
        ("cls.png", "class 5 exceeds nc=3"),
    ]:
        assert any(name in l and why in l for l in caplog.text.splitlines()), name
    for i in range(ds.n):
        im, lb, f, _ = ds[i]
        assert im.shape == (3, 128, 128) and len(lb) == (0 if f.endswith("empty.png") else 1)


def test_create_dataloader_checks_classes_against_nc(tmp_path, caplog):
    # train.py and val.py pass the yaml's nc: a label class >= nc is reported and its image skipped, not a crash
    d = rect_dataset(tmp_path, 2)
    rect_image(tmp_path, "train", "cls.png", (64, 64), (1, 1, 40, 40), 5)
    assert create_dataloader(d, 128, 2, 32, workers=0, nc=3)[1].n == 2
    assert any("cls.png" in l and "class 5 exceeds nc=3" in l for l in caplog.text.splitlines())
    assert create_dataloader(d, 128, 2, 32, workers=0, single_cls=True)[1].n == 3  # nc=None: no class check


def test_missing_labels_directory_all_backgrounds(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3)
    for f in (tmp_path / "labels" / "train").iterdir():
        f.unlink()
    (tmp_path / "labels" / "train").rmdir()
    ds = LoadImagesAndLabels(d, 128)
    assert ds.n == 3 and all(len(l) == 0 for l in ds.labels)
    warnings = [l for l in caplog.text.splitlines() if "WARNING" in l]
    assert len(warnings) == 1 and "labels directory" in warnings[0] and "not found" in warnings[0]
    assert not list(tmp_path.rglob("*.cache"))
    assert len(ds[0][1]) == 0


# ------------------------------------------------------------------------------------------------ plain path
def test_getitem_labels_match_pixels_and_shapes(tmp_path):
    f = rect_image(tmp_path, "val", "a.png", (120, 80), (30, 20, 70, 50), 1)
    ds = LoadImagesAndLabels(f, 160)
    im, lb, path, shapes = ds[0]
    assert im.dtype == torch.uint8 and im.shape == (3, 160, 160) and path == str(f)
    assert lb.shape == (1, 6) and lb[0, 0] == 0 and lb[0, 1] == 1
    assert_labels_match_pixels(im, lb, tol=1.0)
    (h0, w0), ((gh, gw), (padw, padh)) = shapes
    assert (h0, w0) == (80, 120) and gw == pytest.approx(160 / 120) and gh == pytest.approx(107 / 80)
    assert padw == 0 and padh == pytest.approx((160 - 107) / 2)
    box = xywh2xyxy(lb[:, 2:6] * 160)
    scale_boxes((160, 160), box, (h0, w0), shapes[1])
    np.testing.assert_allclose(box.numpy(), [[30, 20, 70, 50]], atol=1.0)  # back to the original pixels


def test_rect_batch_shapes_and_order(tmp_path):
    sizes = {"a.png": (160, 80), "b.png": (80, 160), "c.png": (160, 120), "d.png": (120, 160)}  # (w, h)
    for name, wh in sizes.items():
        rect_image(tmp_path, "val", name, wh, (2, 2, 20, 20), 0)
    ds = LoadImagesAndLabels(tmp_path / "images" / "val", 160, batch_size=2, rect=True, pad=0.5, stride=32)
    assert [Path(f).name for f in ds.im_files] == ["a.png", "c.png", "d.png", "b.png"]  # h/w ascending
    assert ds.shapes.tolist() == [[160, 80], [160, 120], [120, 160], [80, 160]]
    # batch 0: h/w max 0.75 -> [0.75, 1]; ceil(0.75*160/32 + 0.5) = 5 -> 160, ceil(5 + 0.5) = 6 -> 192
    assert ds.batch_shapes.tolist() == [[160, 192], [192, 160]]
    assert ds[0][0].shape == (3, 160, 192) and ds[3][0].shape == (3, 192, 160)
    assert not ds.mosaic
    ds0 = LoadImagesAndLabels(tmp_path / "images" / "val", 160, batch_size=2, rect=True, pad=0.0, stride=32)
    assert ds0.batch_shapes.tolist() == [[128, 160], [160, 128]]
    loader, _ = create_dataloader(tmp_path / "images" / "val", 160, 2, 32, rect=True, pad=0.5, workers=0)
    assert [tuple(b[0].shape) for b in loader] == [(2, 3, 160, 192), (2, 3, 192, 160)]


def test_collate_batch_index_single_cls_and_indices(tmp_path):
    d = rect_dataset(tmp_path, 5)
    loader, ds = create_dataloader(d, 128, 3, 32, single_cls=True, workers=0)
    imgs, targets, paths, shapes = next(iter(loader))
    assert imgs.shape == (3, 3, 128, 128) and len(paths) == 3 and len(shapes) == 3
    assert targets[:, 0].tolist() == [0.0, 1.0, 2.0] and (targets[:, 1] == 0).all()


def test_image_weights_sampler_redraws_reach_persistent_workers(tmp_path):
    # --image-weights: the trainer redraws sampler.indices each epoch; a persistent worker must see the new draw
    d = rect_dataset(tmp_path, 5)
    loader, ds = create_dataloader(d, 128, 3, 32, image_weights=True, workers=1)
    assert loader.num_workers == 1 and loader.persistent_workers
    assert [p for b in loader for p in b[2]] == ds.im_files  # first epoch: every image once, in order
    loader.sampler.indices = [4, 4, 1]
    assert [p for b in loader for p in b[2]] == [ds.im_files[4], ds.im_files[4], ds.im_files[1]]


# ------------------------------------------------------------------------------------------------ augmented path
HYP = dict(
    mosaic=1.0,
    mixup=0.0,
    copy_paste=0.0,
    degrees=10.0,
    translate=0.1,
    scale=0.3,
    shear=5.0,
    perspective=0.0,
    hsv_h=0.0,
    hsv_s=0.0,
    hsv_v=0.0,
    flipud=0.5,
    fliplr=0.5,
)


@pytest.mark.parametrize("mosaic, degrees, shear", [(1.0, 0.0, 0.0), (1.0, 10.0, 5.0), (0.0, 10.0, 5.0)])
def test_augmented_boxes_match_pixels(tmp_path, mosaic, degrees, shear):
    d = rect_dataset(tmp_path, 6, wh=(128, 128))
    ds = LoadImagesAndLabels(d, 128, augment=True, hyp={**HYP, "mosaic": mosaic, "degrees": degrees, "shear": shear})
    random.seed(0)
    np.random.seed(0)
    n = 0
    for i in range(12):
        im, lb, _, shapes = ds[i % ds.n]
        assert im.shape == (3, 128, 128) and (shapes is None) == (mosaic == 1.0)
        n += assert_labels_match_pixels(im, lb, tol=2.0, cut_ok=bool(degrees or shear))
    assert n >= 12  # most rectangles survive: the check really ran


def test_mixup_keeps_both_label_sets(tmp_path):
    d = rect_dataset(tmp_path, 4, wh=(128, 128))
    ds = LoadImagesAndLabels(d, 128, augment=True, hyp={**HYP, "mixup": 1.0, "degrees": 0.0, "shear": 0.0})
    random.seed(1)
    np.random.seed(1)
    counts = [len(ds[i][1]) for i in range(4)]
    assert max(counts) > 4  # two mosaics of 4 one-box images each


def test_workers_2_same_targets_as_workers_0(tmp_path):
    d = rect_dataset(tmp_path, 6)
    out = []
    for workers in (0, 2):
        loader, _ = create_dataloader(d, 128, 2, 32, workers=workers)
        assert loader.num_workers == workers
        out.append([(b[1].clone(), b[2]) for b in loader])
    assert len(out[0]) == 3
    for (t0, p0), (t2, p2) in zip(*out):
        assert p0 == p2 and torch.equal(t0, t2)


def test_workers_rule_and_rect_shuffle_warning(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3)
    assert create_dataloader(d, 128, 1, 32, workers=4)[0].num_workers == 0  # batch 1 -> main process
    loader, _ = create_dataloader(d, 128, 2, 32, workers=0, rect=True, shuffle=True)
    assert "--rect is incompatible with DataLoader shuffle" in caplog.text
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)


def test_ram_and_disk_cache_identical_images(tmp_path, caplog):
    d = rect_dataset(tmp_path, 3, wh=(160, 120))
    plain = LoadImagesAndLabels(d, 128)
    ram = LoadImagesAndLabels(d, 128, cache="ram")
    assert all(im is not None for im in ram.ims)
    disk = LoadImagesAndLabels(d, 128, cache="disk")
    assert sorted(p.name for p in d.glob("*.npy")) == ["000.npy", "001.npy", "002.npy"]
    assert "GB ram)" in caplog.text and "GB disk)" in caplog.text
    for i in range(3):
        a, b, c = plain[i][0], ram[i][0], disk[i][0]
        assert a.shape == (3, 128, 128) and torch.equal(a, b) and torch.equal(a, c)
    again = LoadImagesAndLabels(d, 128)  # the .npy files are not images
    assert again.n == 3
    with pytest.raises(UserError, match="--cache ssd is not a cache mode"):
        LoadImagesAndLabels(d, 128, cache="ssd")


def test_seeded_augmenting_loader_is_deterministic(tmp_path):
    d = rect_dataset(tmp_path, 4, wh=(64, 64))
    hyp = {**HYP, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}

    def run(seed: int, noise: int) -> list[tuple[torch.Tensor, torch.Tensor, tuple]]:
        random.seed(noise)  # the workers inherit this state: only the loader's own seeding may decide
        np.random.seed(noise)
        torch.manual_seed(noise)
        loader, _ = create_dataloader(d, 64, 2, 32, hyp=hyp, augment=True, workers=2, shuffle=True, seed=seed)
        return [(b[0], b[1], b[2]) for b in loader]

    a, b, c = run(0, 1), run(0, 2), run(1, 1)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b))
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, c))  # another seed: other shuffle / augmentation


@pytest.mark.parametrize("free_gb, cached", [(0.0001, False), (64.0, True)])
def test_cache_ram_checks_available_memory_first(tmp_path, caplog, monkeypatch, free_gb, cached):
    import psutil

    from utils.dataloaders import dataset as dataset_mod

    d = rect_dataset(tmp_path, 3, wh=(160, 120))  # 3 x 128 x 96 x 3 bytes = 110 kB resized
    real = psutil.virtual_memory()
    monkeypatch.setattr(dataset_mod.psutil, "virtual_memory", lambda: real._replace(available=int(free_gb * 1e9)))
    ds = LoadImagesAndLabels(d, 128, cache="ram")
    warnings = [r.getMessage() for r in caplog.records if "--cache ram needs" in r.getMessage()]
    assert all(im is not None for im in ds.ims) == cached and (ds.cache_mode == "ram") == cached
    assert len(warnings) == (0 if cached else 1)
    if not cached:  # one line, the estimate is the resized size, the run goes on with images read from disk
        assert "\n" not in warnings[0] and "needs 0.0GB for 3 images at 128 px" in warnings[0]
        assert all(im is None for im in ds.ims) and ds[0][0].shape == (3, 128, 128)


def test_cache_ram_estimate_counts_each_local_ddp_rank(tmp_path, monkeypatch):
    from utils.dataloaders import dataset as dataset_mod

    d = rect_dataset(tmp_path, 2, wh=(160, 120))
    need = 2 * 128 * 96 * 3
    real = dataset_mod.psutil.virtual_memory()
    monkeypatch.setattr(dataset_mod.psutil, "virtual_memory", lambda: real._replace(available=int(need * 2)))
    assert LoadImagesAndLabels(d, 128, cache="ram").cache_mode == "ram"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 ranks on this machine each hold a copy
    assert LoadImagesAndLabels(d, 128, cache="ram").cache_mode is None


# ------------------------------------------------------------------------------------ images that vanish after the scan
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


def test_val_counts_each_image_once_when_one_vanishes(tmp_path, caplog, micro_pt):
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
    row = next(m.split() for m in caplog.messages if re.match(r"\s+all\s", m))
    assert row[1:3] == ["5", "5"]  # 5 images, 5 instances: the vanished image is neither counted nor replaced
