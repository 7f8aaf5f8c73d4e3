"""Classification data (utils/dataloaders/classify.py, make_shapes.generate_shapes_cls): the folder layout and its
one-line errors, class order, unreadable images, the v2 transforms, batch mixing, caches, DDP sharding and the
embedded set. Every dataset is a few small PNGs written by the test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from data.scripts import make_shapes as ms
from utils.core.errors import UserError
from utils.dataloaders import classify as cl
from utils.dataloaders.classify import (
    AUTO_AUGMENTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    ClassifyAugment,
    ClassifyDataset,
    check_classify_data,
    create_classify_loader,
    eval_resize_size,
    normalize_batch,
)

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ClassifyAugment(auto_augment="none", erase=0.0)  # only crops and flips: constant images stay constant


def img(path: Path, bgr=(0, 0, 0), wh=(40, 30)) -> Path:
    """A solid w x h PNG (BGR colour), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((wh[1], wh[0], 3), bgr, np.uint8))
    return path


def tree(root: Path, spec: dict[str, dict[str, int]], wh=(40, 30)) -> Path:
    """root/<split>/<class>/<i>.png: spec = {split: {class: count}}; image colour grows with i (all different)."""
    for split, classes in spec.items():
        for c, n in classes.items():
            for i in range(n):
                img(root / split / c / f"{i}.png", (10 * i, 100, 200), wh)
    return root


def normalised(rgb) -> torch.Tensor:
    """The float (3,) an RGB uint8 colour becomes after ToDtype + Normalize(ImageNet)."""
    return (torch.tensor(rgb) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def unreadable_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot read the image" in r.getMessage()]


# ------------------------------------------------------------------------------------------------ layout
def _missing(root: Path) -> None:
    pass


def _flat_root(root: Path) -> None:
    img(root / "a.png")


def _flat_train(root: Path) -> None:
    img(root / "train" / "a.png")
    img(root / "train" / "b.png")
    tree(root, {"val": {"a": 1}})


def _no_val(root: Path) -> None:
    tree(root, {"train": {"a": 1, "b": 1}})


def _only_in_val(root: Path) -> None:
    tree(root, {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1, "x": 1}})


def _only_in_train(root: Path) -> None:
    tree(root, {"train": {"a": 1, "b": 1}, "val": {"a": 1}})


@pytest.mark.parametrize(
    "make, match",
    [
        (_missing, r"classification dataset .*ds not found — pass --data a folder"),
        (_flat_root, r"ds holds images but has no train/ folder — lay the images out as root/train/<class>/"),
        (_flat_train, r"train holds 2 images but no class folders — put each class's images in its own folder"),
        (_no_val, r"ds has no val/ \(or test/\) folder — put held-out images in .*val/<class>/"),
        (_only_in_val, r"class 'x' only in val: .*val/x has no counterpart in .*train — give train/ the same"),
        (_only_in_train, r"class 'b' only in train: .*train/b has no counterpart in .*val"),
    ],
)
def test_layout_errors_are_one_line(tmp_path, make, match):
    root = tmp_path / "ds"
    make(root)
    with pytest.raises(UserError, match=match) as e:
        check_classify_data(root)
    assert "\n" not in str(e.value) and str(root) in str(e.value)


def test_class_order_is_imagefolders_and_test_is_the_fallback(tmp_path):
    classes = {"b": 1, "a": 2, "C": 1, "a2": 1, "10": 1, "9": 1}
    root = tree(tmp_path / "ds", {"train": classes, "test": classes})
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: never a class
    data = check_classify_data(root)
    assert list(data.names.values()) == ["10", "9", "C", "a", "a2", "b"]
    assert list(data.names.values()) == ImageFolder(str(root / "test")).classes
    assert data.val == root / "test" and data.train == root / "train" and data.nc == 6
    tree(root, {"val": classes})
    assert check_classify_data(str(root)).val == root / "val"  # val/ first when both exist
    ds = ClassifyDataset(root / "train", 16, names=data.names)
    assert ds.counts().tolist() == [1, 1, 1, 2, 1, 1] and ds.labels[ds.files.index(str(root / "train/a/1.png"))] == 3


def test_empty_class_folder_skipped_with_warning(tmp_path, caplog):
    root = tree(tmp_path / "ds", {"train": {"a": 2, "c": 1}, "val": {"a": 1, "c": 1}})
    (root / "train" / "b" / "sub").mkdir(parents=True)
    (root / "train" / "b" / "notes.txt").write_text("no images here")
    img(root / "train" / "stray.png")
    data = check_classify_data(root)
    assert data.names == {0: "a", 1: "c"}
    assert "class folders without images skipped: b" in caplog.text
    assert "1 images directly in" in caplog.text and "stray.png" in caplog.text
    for c in ("a", "c"):
        for f in (root / "train" / c).iterdir():
            f.unlink()
    with pytest.raises(UserError, match=r"no images in any class folder of .*train — put images in"):
        check_classify_data(root)


def test_names_resolve_to_a_data_yaml_that_generates(tmp_path, monkeypatch):
    """--data NAME -> ROOT/data/NAME.yaml; its download generates the set on first use (as data/shapes-cls.yaml)."""
    d = yaml.safe_load((ROOT / "data" / "shapes-cls.yaml").read_text())
    d["path"] = str(tmp_path / "gen")
    d["download"] = d["download"].replace("n_train=300, n_val=90", "n_train=6, n_val=3")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mycls.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setattr(cl, "ROOT", tmp_path)
    data = check_classify_data("mycls")
    assert data.names == ms.NAMES and data.train == tmp_path / "gen" / "train" and data.val == tmp_path / "gen" / "val"
    assert len(ClassifyDataset(data.val, 32, names=data.names)) == 3


# ------------------------------------------------------------------------------------------------ unreadable
def test_corrupt_image_skipped_with_one_warning(tmp_path, caplog):
    root = tree(tmp_path / "ds", {"train": {"a": 3, "b": 2}})
    bad = root / "train" / "a" / "bad.jpg"
    bad.write_bytes(b"not an image at all" * 10)
    val, _ = create_classify_loader(root / "train", 16, 2, workers=0)
    for _ in range(2):  # two epochs: still one warning
        labels = torch.cat([y for _, y in val])
        assert sorted(labels.tolist()) == [0, 0, 0, 1, 1]  # the 5 good images, the bad one not replaced
    train, _ = create_classify_loader(root / "train", 16, 3, augment=True, opts=PLAIN, workers=0, seed=1)
    for _ in range(3):
        assert [len(y) for _, y in train] == [3, 3]  # training replaces it: batches stay full
    warnings = unreadable_warnings(caplog)
    assert len(warnings) == 2 and all(str(bad) in w for w in warnings)  # once per dataset (val, train)


def test_corrupt_image_warned_once_across_workers(tmp_path, caplog):
    root = tree(tmp_path / "ds", {"val": {"a": 3, "b": 3}})
    bad = img(root / "val" / "b" / "z.png")
    bad.write_bytes(b"\x89PNG broken")
    loader, _ = create_classify_loader(root / "val", 16, 2, workers=2)
    assert loader.num_workers == 2
    for _ in range(2):
        assert sum(len(y) for _, y in loader) == 6
    assert len(unreadable_warnings(caplog)) == 1


# ------------------------------------------------------------------------------------------------ transforms
@pytest.mark.parametrize("auto", AUTO_AUGMENTS)
def test_train_batches_are_normalised_squares(tmp_path, auto):
    root = tree(tmp_path / "ds", {"train": {"a": 3, "b": 3}}, wh=(48, 30))
    loader, _ = create_classify_loader(
        root / "train", 32, 4, augment=True, opts=ClassifyAugment(auto_augment=auto), workers=0
    )
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    lo, hi = normalised((0, 0, 0)).min(), normalised((255, 255, 255)).max()
    assert lo - 1e-5 <= x.min() and x.max() <= hi + 1e-5


def test_train_crop_of_a_constant_image_is_its_normalised_colour(tmp_path):
    img(tmp_path / "train" / "a" / "0.png", (30, 120, 210), (50, 37))  # BGR on disk -> RGB (210, 120, 30)
    ds = ClassifyDataset(tmp_path / "train", 24, augment=True, opts=PLAIN)
    x, label, failed = ds[0]
    assert x.shape == (3, 24, 24) and label == 0 and failed == ()
    assert torch.allclose(x, normalised((210, 120, 30)).view(3, 1, 1).expand(3, 24, 24), atol=1e-6)
    erased = ClassifyDataset(tmp_path / "train", 24, augment=True, opts=ClassifyAugment(auto_augment="none", erase=1.0))
    assert (erased[0][0] == 0).all(0).any()  # RandomErasing wrote the normalised mean (0) into a patch


def test_eval_is_the_centre_crop_of_the_resize(tmp_path):
    """64 px: an 8 px red frame around green. At imgsz 8 with crop ratio 0.5 the short side goes to 16 (frame 2 px,
    blurred by the filter at most 1 px further) and the centre 8 px are pure green; at crop ratio 1 the frame stays."""
    im = np.zeros((64, 64, 3), np.uint8)
    im[:] = (0, 0, 255)  # BGR red
    im[8:56, 8:56] = (0, 255, 0)
    (tmp_path / "val" / "a").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "val" / "a" / "f.png"), im)
    crop = ClassifyDataset(tmp_path / "val", 8, opts=ClassifyAugment(crop_ratio=0.5))[0][0]
    assert crop.shape == (3, 8, 8)
    assert torch.equal(crop, normalised((0, 255, 0)).view(3, 1, 1).expand(3, 8, 8))
    whole = ClassifyDataset(tmp_path / "val", 8, opts=ClassifyAugment(crop_ratio=1.0))[0][0]
    assert torch.allclose(whole[:, 0, 0], normalised((255, 0, 0)), atol=0.05)  # the red corner is kept
    assert eval_resize_size(224, 0.875) == 256 and eval_resize_size(384, 1.0) == 384 and eval_resize_size(8, 0.5) == 16


def test_bad_augment_settings_are_one_line():
    for kw, match in (
        (dict(auto_augment="augmix"), "auto_augment 'augmix' is unknown — use one of randaugment"),
        (dict(crop_ratio=1.5), r"crop_ratio=1.5 must be in \(0, 1\]"),
        (dict(scale=(0.5, 0.1)), r"scale \(0.5, 0.1\) is not a range"),
        (dict(erase=2), "erase=2 is not a probability"),
    ):
        with pytest.raises(UserError, match=match):
            ClassifyAugment(**kw)


def test_batch_mix_gives_soft_targets_summing_to_one():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([3, 0, 4, 1, 2])  # all labels different: lambda is readable
    images, t = BatchMix(5, mixup=0.8)(x, y)
    lam = t[torch.arange(5), y]
    assert t.shape == (5, 5) and t.dtype == torch.float32 and torch.allclose(t.sum(1), torch.ones(5))
    assert torch.allclose(t[torch.arange(5), y.roll(1)], 1 - lam)  # mixed with the previous image
    assert 0 < lam[0] < 1 and torch.allclose(images, lam[0] * x + (1 - lam[0]) * x.roll(1, 0), atol=1e-6)
    for _ in range(5):
        images, t = BatchMix(5, mixup=0.8, cutmix=1.0)(x, y)
        assert torch.allclose(t.sum(1), torch.ones(5)) and (t >= 0).all()
    off = BatchMix(5)
    images, t = off(x, y)
    assert not off.active and images is x and torch.equal(t, torch.eye(5)[y])


# ------------------------------------------------------------------------------------------------ caches, DDP
def test_cache_ram_and_disk_give_the_same_eval_tensors(tmp_path):
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(90, 60), (40, 70), (20, 20), (33, 57)]):  # larger and smaller than the bound (36)
        (root / "a").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "a" / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    plain = ClassifyDataset(root, 32, opts=ClassifyAugment(crop_ratio=0.875))
    ram = ClassifyDataset(root, 32, cache="ram")
    disk = ClassifyDataset(root, 32, cache="disk")
    assert ram.cache_mode == "ram" and all(min(t.shape[1:]) <= 36 for t in ram.ims)
    assert min(ram.ims[0].shape[1:]) == 36 and ram.ims[2].shape[1:] == (20, 20)  # shrunk, never enlarged
    assert sorted(p.name for p in (root / "a").glob("*.npy")) == ["0.npy", "1.npy", "2.npy", "3.npy"]
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], ram[i][0]) and torch.equal(plain[i][0], disk[i][0])


def test_ddp_ranks_split_the_set_without_overlap(tmp_path):
    root = tree(tmp_path / "ds", {"train": {"a": 5, "b": 5}, "val": {"a": 5, "b": 4}})
    for split, augment, n in (("train", True, 10), ("val", False, 9)):
        shards = []
        for rank in (0, 1):
            loader, _ = create_classify_loader(root / split, 16, 8, augment=augment, rank=rank, world_size=2, workers=0)
            shards.append(list(loader.sampler))
        assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(n))
    assert len(shards[0]) == 5 and len(shards[1]) == 4  # evaluation: no image repeated to even the ranks out
    assert sum(len(y) for _, y in loader) == 4  # rank 1's loader yields its own 4 images


# ------------------------------------------------------------------------------------------------ embedded set
def test_shapes_cls_generator_is_deterministic(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}

    a = files(ms.generate_shapes_cls(tmp_path / "a", n_train=9, n_val=4, imgsz=32, seed=3))
    b = files(ms.generate_shapes_cls(tmp_path / "b", n_train=9, n_val=4, imgsz=32, seed=3))
    c = files(ms.generate_shapes_cls(tmp_path / "c", n_train=9, n_val=4, imgsz=32, seed=4))
    assert a == b and a.keys() == c.keys() and a != c
    assert sum(k.startswith("train/circle/") for k in a) == 3 and sum(k.startswith("val/") for k in a) == 4
    data = check_classify_data(tmp_path / "a")
    assert data.names == ms.NAMES and sorted(p.name for p in (tmp_path / "a" / "val").iterdir()) == sorted(
        ms.NAMES.values()
    )
    with pytest.raises(UserError, match="at least 3 images per split"):
        ms.generate_shapes_cls(tmp_path / "d", n_train=2, n_val=3)


def test_uint8_loader_normalised_on_the_device_equals_the_float_loader(tmp_path):
    """normalize=False (what classify/train.py and val.py use): uint8 batches that normalize_batch turns into exactly
    the float loader's batches (eval transforms: deterministic)."""
    root = tmp_path / "d"
    ms.generate_shapes_cls(root, n_train=6, n_val=6, imgsz=48, seed=1)
    a, _ = create_classify_loader(root / "val", 32, 6, workers=0)
    b, _ = create_classify_loader(root / "val", 32, 6, workers=0, normalize=False)
    (xa, ya), (xb, yb) = next(iter(a)), next(iter(b))
    assert xa.dtype == torch.float32 and xb.dtype == torch.uint8 and torch.equal(ya, yb)
    torch.testing.assert_close(normalize_batch(xb), xa, atol=1e-5, rtol=0)
    assert normalize_batch(xa) is xa  # already normalised: untouched


@pytest.mark.parametrize("flip", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_train_crop_is_torchvisions_box_resized_and_flipped(flip):
    """CropFlip (OpenCV's resize) takes the box torchvision's RandomResizedCrop samples from the same torch seed, and
    its pixels are v2's resized crop of that box, flipped as asked: equal where the crop is shrunk on an exact grid,
    within a bicubic filter's ringing on a smooth ramp otherwise."""
    yy, xx = np.mgrid[0:96, 0:96]
    hwc = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)  # smooth ramps: filters differ only slightly
    im = torch.from_numpy(hwc).permute(2, 0, 1)
    opts = ClassifyAugment(scale=(0.2, 1.0), fliplr=flip[0], flipud=flip[1], auto_augment="none", erase=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        box = v2.RandomResizedCrop.get_params(im, list(opts.scale), list(opts.ratio))
        torch.manual_seed(seed)
        out = cl.CropFlip(32, opts)(im)
        ref = TF.resized_crop(im, *box, [32, 32], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        ref = ref.flip(-1) if flip[0] else ref
        ref = ref.flip(-2) if flip[1] else ref
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        diff = (out.int() - ref.int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 6, (seed, box, diff.max())
    flipped = cl.CropFlip(96, ClassifyAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), fliplr=1.0))(im)
    assert torch.equal(flipped, im.flip(-1))  # the whole image at its own size: only the flip changes it
