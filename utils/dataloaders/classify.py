"""Image-classification data: the root/train/<class>/* folder layout and its checks, the torchvision.transforms.v2
recipes (train: random resized crop, flips, RandAugment / TrivialAugment, erasing; eval: resize + centre crop),
batch-level MixUp / CutMix, and the loader.

Class names and order come from the train folder names, sorted as torchvision's ImageFolder does, so a model trained
here and one trained with ImageFolder agree on class indices. Images are found with utils.core.files.find_files and
decoded with utils.core.image_io.imread (BGR), then handed to torchvision as RGB uint8 CHW tensors.

Unreadable images are not looked for at scan time (a decode of every file would take minutes at ImageNet scale);
a file that fails to decode is replaced by another random image when training (the batch stays full) and left out
when validating (no other image may be counted in its place). Workers report the failed path with the batch and the
loader warns once per file in the main process, however many workers or epochs meet it.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from utils.core.errors import UserError
from utils.core.files import IMG_FORMATS, ROOT, file_ext, find_files, iter_files
from utils.core.image_io import imread, read_npy_image, write_npy_image
from utils.core.log import LOGGER
from utils.dataloaders.data_yaml import check_dataset
from utils.dataloaders.dataset import loader_options

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0-1 scale: what every ImageNet backbone here was trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTO_AUGMENTS = ("randaugment", "trivialaugment", "autoaugment", "none")
INTERPOLATIONS = ("bilinear", "bicubic")
EVAL_SPLITS = ("val", "test")  # the first that exists is the validation split
DATASETS_DIR = ROOT / "datasets"  # --data NAME also looks here (YOLOv5's DATASETS_DIR)
_QUIET = ("", "txt", "npy", "json", "yaml", "yml", "md", "csv")  # never warned about in class folders
_MAX_SUBSTITUTES = 100  # training: unreadable images replaced in a row before giving up on the dataset
_RAM_MARGIN = 0.2  # --cache ram leaves this share on top of the images for the model, workers and the rest


# ------------------------------------------------------------------------------------------------ options
@dataclass(kw_only=True)  # keywords only: ten settings of similar types
class ClassifyAugment:
    """Augmentation and eval-crop settings: the one place of their defaults (ConvNeXt's official recipe for the
    per-image part: bicubic crops, RandAugment m9 n2, erasing 0.25; batch mixing off, as in YOLOv5's classify)."""

    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range (share of the image)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect range
    fliplr: float = 0.5  # horizontal flip probability
    flipud: float = 0.0  # vertical flip probability
    auto_augment: str = "randaugment"  # one of AUTO_AUGMENTS
    erase: float = 0.25  # RandomErasing probability (after normalising: erased pixels become the mean)
    mixup: float = 0.0  # MixUp Beta alpha; 0 = off (BatchMix)
    cutmix: float = 0.0  # CutMix Beta alpha; 0 = off (BatchMix)
    crop_ratio: float = 0.875  # eval: resize the short side to imgsz / crop_ratio, then centre-crop imgsz
    interpolation: str = "bicubic"  # resize filter of both crops (the official ConvNeXt evaluation's)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise UserError(f"classification scale {self.scale} is not a range in (0, 1] — e.g. scale=(0.08, 1.0)")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise UserError(f"classification ratio {self.ratio} is not an aspect range — e.g. ratio=(0.75, 1.333)")
        for name in ("fliplr", "flipud", "erase"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"classification {name}={getattr(self, name)} is not a probability — use 0 to 1")
        if self.mixup < 0 or self.cutmix < 0:
            raise UserError(f"mixup={self.mixup} cutmix={self.cutmix}: Beta alphas must be >= 0 (0 turns one off)")
        if not 0 < self.crop_ratio <= 1:
            raise UserError(f"crop_ratio={self.crop_ratio} must be in (0, 1] — e.g. 0.875 (224 of 256)")
        if self.auto_augment not in AUTO_AUGMENTS:
            raise UserError(f"auto_augment '{self.auto_augment}' is unknown — use one of {', '.join(AUTO_AUGMENTS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation '{self.interpolation}' is unknown — use {' or '.join(INTERPOLATIONS)}")


def eval_resize_size(imgsz: int, crop_ratio: float) -> int:
    """Short side the eval transform resizes to before the centre crop: floor(imgsz / crop_ratio), 256 at 224."""
    return math.floor(imgsz / crop_ratio + 1e-6)  # the epsilon keeps exact quotients (224 / 0.875) from rounding down


@dataclass
class CropFlip:
    """The training crop: torchvision's RandomResizedCrop box (its sampling, from torch's RNG), resized by OpenCV on
    the HWC buffer, then the random flips — what v2.RandomResizedCrop + RandomHorizontal/VerticalFlip do.

    Why not the v2 transforms themselves: on small images their per-call dispatch dominates, and this path is 2x
    faster per image (139 us for v2's crop alone vs 64 us for crop + flip + tensor here, 64 px images). Downscaling uses
    INTER_AREA (an antialiased resize, as v2's antialias=True); enlarging uses the bicubic / bilinear filter asked."""

    imgsz: int
    opts: ClassifyAugment

    def __call__(self, im: torch.Tensor) -> torch.Tensor:
        """RGB uint8 (3, H, W) → (3, imgsz, imgsz): a CHW view of a new HWC array."""
        o = self.opts
        top, left, h, w = v2.RandomResizedCrop.get_params(im, list(o.scale), list(o.ratio))
        crop = np.ascontiguousarray(im.permute(1, 2, 0).numpy()[top : top + h, left : left + w])
        shrink = h >= self.imgsz and w >= self.imgsz
        interp = cv2.INTER_AREA if shrink else _CV2_FILTERS[o.interpolation]
        out = cv2.resize(crop, (self.imgsz, self.imgsz), interpolation=interp)
        rx, ry = torch.rand(2).tolist()  # torch's RNG, as v2's flips: seeded per worker and per epoch
        flip_x, flip_y = rx < o.fliplr, ry < o.flipud
        if flip_x or flip_y:
            out = cv2.flip(out, -1 if flip_x and flip_y else int(flip_x))  # OpenCV codes: 1 = x, 0 = y, -1 = both
        return torch.from_numpy(out).permute(2, 0, 1)


_CV2_FILTERS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def build_transforms(
    imgsz: int, augment: bool, opts: ClassifyAugment | None = None, normalize: bool = True, crop: bool = True
) -> v2.Transform:
    """torchvision v2 pipeline from an RGB uint8 (3, H, W) tensor to a normalised float32 (3, imgsz, imgsz) one, or
    with normalize=False to a uint8 one (normalize_batch finishes it on the device: a quarter of the bytes through
    the worker queue and one vectorised op per batch instead of one per image). Training with crop=False: the steps
    after CropFlip only (the dataset runs CropFlip first, on OpenCV)."""
    opts = opts or ClassifyAugment()
    interp = v2.InterpolationMode(opts.interpolation)
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if normalize else []
    if not augment:
        size = eval_resize_size(imgsz, opts.crop_ratio)
        return v2.Compose([v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(imgsz), *normalise])
    ops: list[Any] = []
    if crop:
        ops.append(v2.RandomResizedCrop(imgsz, scale=opts.scale, ratio=opts.ratio, interpolation=interp))
        if opts.fliplr:
            ops.append(v2.RandomHorizontalFlip(opts.fliplr))
        if opts.flipud:
            ops.append(v2.RandomVerticalFlip(opts.flipud))
    auto = {
        "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
        "trivialaugment": v2.TrivialAugmentWide,
        "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
    }.get(opts.auto_augment)
    if auto:
        ops.append(auto())
    ops += normalise
    if opts.erase:  # erased pixels become the mean colour: 0 after normalising, the mean's uint8 value before
        ops.append(v2.RandomErasing(opts.erase, value=0 if normalize else [round(m * 255) for m in IMAGENET_MEAN]))
    return v2.Compose(ops) if ops else v2.Identity()  # v2.Compose refuses an empty list


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (B, 3, H, W) from a normalize=False loader as the model takes it: float32, ImageNet mean / std,
    on the batch's device; a float batch is returned as it is (already normalised)."""
    if images.dtype != torch.uint8:
        return images
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


class BatchMix:
    """MixUp / CutMix of a whole batch (torchvision v2), for the trainer to call on the device after the loader:
    (images (B, 3, H, W) float, labels (B,) int64) -> (images, soft targets (B, nc) float32, each row summing to 1).
    With both alphas > 0 each batch gets one of the two, chosen at random; with both 0 the targets are one-hot."""

    def __init__(self, nc: int, mixup: float = 0.0, cutmix: float = 0.0) -> None:
        self.nc = nc
        ops = [op(alpha=a, num_classes=nc) for op, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]
        self.op = v2.RandomChoice(ops) if len(ops) > 1 else (ops[0] if ops else None)

    @property
    def active(self) -> bool:
        return self.op is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.op is None:
            return images, torch.nn.functional.one_hot(labels, self.nc).float()
        images, targets = self.op(images, labels)
        return images, targets.float()


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised float (B, 3, H, W) back to RGB uint8, for plotting a training batch (uint8 is returned as is)."""
    if images.dtype == torch.uint8:
        return images
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------ layout
@dataclass
class ClassifyData:
    """A checked classification dataset: split folders and the class names of train's folders (sorted)."""

    root: Path
    train: Path
    val: Path  # val/, or test/ when there is no val/
    names: dict[int, str]
    nc: int


_LAYOUT = "root/train/<class>/*.jpg and root/val/<class>/*.jpg"


def _has_image(folder: str) -> bool:
    """Whether folder holds an image anywhere below it; stops at the first one."""
    return any(file_ext(f) in IMG_FORMATS and not os.path.basename(f).startswith(".") for f in iter_files(folder))


def split_classes(split: str | Path, prefix: str = "", warn: bool = True) -> list[str]:
    """Sorted names of split's class folders that hold images (hidden folders such as .ipynb_checkpoints ignored).

    Images directly in split beside class folders are ignored with a warning; empty class folders are skipped with a
    warning (their class does not exist for the run). UserError for a flat folder or one without any image.
    warn=False: no warnings (the split was checked, and warned about, before)."""
    split = Path(split)
    with os.scandir(split) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    dirs = sorted(e.name for e in entries if e.is_dir())
    loose = sorted(e.name for e in entries if e.is_file() and file_ext(e.name) in IMG_FORMATS)
    if not dirs:
        what = f"holds {len(loose)} images but no class folders" if loose else "has no class folders"
        raise UserError(f"{prefix}{split} {what} — put each class's images in its own folder: {split}/<class>/*.jpg")
    if loose and warn:
        LOGGER.warning(
            f"{prefix}WARNING ⚠️ {len(loose)} images directly in {split} are in no class folder and are ignored "
            f"(e.g. {loose[0]}) — move them into {split}/<class>/"
        )
    classes = [d for d in dirs if _has_image(str(split / d))]
    if not classes:
        raise UserError(f"{prefix}no images in any class folder of {split} — put images in {split}/<class>/")
    empty = [d for d in dirs if d not in classes]
    if empty and warn:
        LOGGER.warning(
            f"{prefix}WARNING ⚠️ class folders without images skipped: {', '.join(empty)} (in {split}) — "
            f"add images or remove the folders"
        )
    return classes


def _check_same_classes(train: Path, train_classes: Sequence[str], split: Path, classes: Sequence[str]) -> None:
    """UserError naming the first class that only one of the two splits has."""
    for only, here, there in (
        (sorted(set(classes) - set(train_classes)), split, train),
        (sorted(set(train_classes) - set(classes)), train, split),
    ):
        if only:
            more = f" (and {len(only) - 1} more: {', '.join(only[1:4])})" if len(only) > 1 else ""
            raise UserError(
                f"class '{only[0]}' only in {here.name}{more}: {here / only[0]} has no counterpart in {there} — "
                f"give {there.name}/ the same class folders as {here.name}/ (or remove that folder)"
            )


def _split_data(train: Path, val: Path, prefix: str = "") -> tuple[dict[int, str], int]:
    """(names, nc) of a train / val pair of split folders whose class folders agree."""
    names = split_classes(train, prefix)
    _check_same_classes(train, names, val, split_classes(val, prefix))
    return dict(enumerate(names)), len(names)


def _folder_data(root: Path, prefix: str = "") -> ClassifyData:
    """Check the layout of a dataset folder and read its class names."""
    if not root.exists():
        raise UserError(
            f"{prefix}classification dataset {root} not found — pass --data a folder laid out as {_LAYOUT}, "
            f"or shapes-cls"
        )
    if not root.is_dir():
        raise UserError(f"{prefix}classification dataset {root} is a file — pass a folder laid out as {_LAYOUT}")
    train = root / "train"
    if not train.is_dir():
        hint = "holds images but " if _has_image(str(root)) else ""
        raise UserError(f"{prefix}{root} {hint}has no train/ folder — lay the images out as {_LAYOUT} (root = {root})")
    val = next((root / s for s in EVAL_SPLITS if (root / s).is_dir()), None)
    if val is None:
        raise UserError(
            f"{prefix}{root} has no val/ (or test/) folder — put held-out images in {root}/val/<class>/ "
            f"with the same class folders as train/"
        )
    names, nc = _split_data(train, val, prefix)
    return ClassifyData(root=root, train=train, val=val, names=names, nc=nc)


def _yaml_data(file: str | Path, autodownload: bool, prefix: str = "") -> ClassifyData:
    """A classification yaml (path, train, val, names, download: as data/shapes-cls.yaml): generated or fetched by
    its download when val is missing (utils.dataloaders.data_yaml.check_dataset), then checked like a folder; its
    names must be the train class folders, or (when none of them is a folder name) display names of the sorted
    folders, one each (ImageNet.yaml: English names of the WordNet-id folders)."""
    d = check_dataset(file, autodownload=autodownload)
    where = d["yaml_file"]
    splits = [d.get("train"), d["val"]]
    if not all(isinstance(s, str) for s in splits):
        raise UserError(f"{prefix}train and val of {where} must each be one folder — fix the yaml")
    train, val = (Path(s) for s in splits)
    for s in (train, val):
        if not s.is_dir():
            raise UserError(f"{prefix}split folder {s} of {where} not found — fix the yaml's path / train / val")
    names, nc = _split_data(train, val, prefix)
    given = list(d["names"].values())
    if len(given) == nc and not set(given) & set(names.values()):
        # Display names of folders named otherwise (ImageNet's WordNet ids n01440764, ...): in the folders' order
        LOGGER.info(f"{prefix}{where}: names are display names of the {nc} class folders of {train}, in sorted order")
        return ClassifyData(root=Path(d["path"]), train=train, val=val, names=dict(enumerate(given)), nc=nc)
    if list(names.values()) != given:
        raise UserError(
            f"{prefix}names of {where} ({', '.join(d['names'].values())}) are not the class folders of {train} "
            f"({', '.join(names.values())}) — fix the names or the folders"
        )
    return ClassifyData(root=Path(d["path"]), train=train, val=val, names=names, nc=nc)


def check_classify_data(data: str | Path | ClassifyData, autodownload: bool = True, prefix: str = "") -> ClassifyData:
    """--data of classification: a folder (root/train/<class>/*, root/val/<class>/* or root/test/<class>/*), a
    classification yaml, or a NAME: ROOT/data/NAME.yaml (e.g. shapes-cls, generated offline on first use) or
    ROOT/datasets/NAME. Every layout problem is a one-line UserError naming the folder."""
    if isinstance(data, ClassifyData):
        return data
    p = Path(str(data)).expanduser()
    if p.is_dir():
        return _folder_data(p.resolve(), prefix)
    if file_ext(p) in ("yaml", "yml"):
        return _yaml_data(p, autodownload, prefix)
    named = ROOT / "data" / f"{p.name}.yaml"
    if len(p.parts) == 1 and named.is_file():
        return _yaml_data(named, autodownload, prefix)
    if len(p.parts) == 1 and (DATASETS_DIR / p.name).is_dir():
        return _folder_data(DATASETS_DIR / p.name, prefix)
    return _folder_data(p.absolute(), prefix)


# ------------------------------------------------------------------------------------------------ dataset
class ClassifyDataset(Dataset):
    """Images of one split folder with class indices from `names` (default: this folder's sorted class folders).

    __getitem__ -> (image, label, failed): image a normalised float (3, imgsz, imgsz) tensor — or None when the
    file cannot be decoded while validating —, label its class index, failed the paths that did not decode on the
    way (the loader warns about them once, in the main process)."""

    def __init__(
        self,
        root: str | Path,
        imgsz: int = 224,
        augment: bool = False,
        names: dict[int, str] | None = None,
        opts: ClassifyAugment | None = None,
        cache: Any = False,
        prefix: str = "",
        normalize: bool = True,
    ) -> None:
        self.root, self.imgsz, self.augment, self.prefix = Path(root), imgsz, augment, prefix
        self.opts = opts or ClassifyAugment()
        if not self.root.is_dir():
            raise UserError(f"{prefix}classification split {self.root} not found — check --data ({_LAYOUT})")
        classes = split_classes(self.root, prefix, warn=names is None)  # given names: check_classify_data warned
        self.names = dict(names) if names is not None else dict(enumerate(classes))
        index = {n: i for i, n in self.names.items()}
        unknown = [c for c in classes if c not in index]
        if unknown:
            raise UserError(
                f"{prefix}class '{unknown[0]}' of {self.root} is not a training class "
                f"({', '.join(self.names.values())}) — remove {self.root / unknown[0]} or add it to train/"
            )
        self.files, labels, others = [], [], []
        for c in classes:
            found = find_files(str(self.root / c), IMG_FORMATS, quiet=_QUIET)
            self.files += found.files
            labels += [index[c]] * len(found.files)
            others += found.others
        if others:
            LOGGER.warning(
                f"{prefix}WARNING ⚠️ {len(others)} files with unsupported extensions skipped (e.g. {others[0]}) — "
                f"supported formats: {', '.join(IMG_FORMATS)}"
            )
        self.labels = np.array(labels, dtype=np.int64)  # numpy: no per-item refcounts touched in forked workers
        self.crop = CropFlip(imgsz, self.opts) if augment else None  # training: OpenCV's crop, then the v2 rest
        self.transform = build_transforms(imgsz, augment, self.opts, normalize=normalize, crop=not augment)
        self.resize_size = eval_resize_size(imgsz, self.opts.crop_ratio)  # --cache ram's bound on the short side
        self.ims: list[torch.Tensor | None] = [None] * len(self.files)
        self.cache_mode: str | None = None
        self.unreadable: set[int] = set()  # per process: indices that failed to decode here
        self.warned: set[str] = set()  # main process: files already warned about
        if cache:
            self.cache_images(str(cache).lower() if cache is not True else "ram")

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> np.ndarray:
        """Images per class index."""
        return np.bincount(self.labels, minlength=len(self.names))

    # -------------------------------------------------------------------------------------------- reading
    def _read(self, i: int) -> torch.Tensor | None:
        """RGB uint8 (3, H, W) pixels of image i (from the cache, the .npy or the file); None when it does not decode.

        The tensor is a CHW view of OpenCV's HWC buffer: torchvision's uint8 resize works on that layout natively."""
        if self.ims[i] is not None:
            return self.ims[i]
        if i in self.unreadable:
            return None
        im = self._read_npy(i) if self.cache_mode == "disk" else None
        if im is None:
            im = imread(self.files[i])
        if im is None:
            self.unreadable.add(i)
            return None
        return torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, tuple[str, ...]]:
        failed: list[str] = []
        for _ in range(_MAX_SUBSTITUTES):
            im = self._read(i)
            if im is not None:
                im = self.crop(im) if self.crop else im
                return self.transform(im), int(self.labels[i]), tuple(failed)
            failed.append(self.files[i])
            if not self.augment:
                return None, int(self.labels[i]), tuple(failed)
            i = random.randrange(len(self.files))  # training: another image keeps the batch full
        raise UserError(
            f"{self.prefix}images of {self.root} can no longer be read ({len(self.unreadable)} failed, e.g. "
            f"{failed[0]}) — was the dataset moved or deleted?"
        )

    def report(self, failed: Sequence[str]) -> None:
        """One warning per unreadable file for the whole run (called in the main process)."""
        for f in failed:
            if f not in self.warned:
                self.warned.add(f)
                LOGGER.warning(f"{self.prefix}WARNING ⚠️ {f}: cannot read the image (corrupt or not an image), skipped")

    # -------------------------------------------------------------------------------------------- caching
    def cache_images(self, mode: str) -> None:
        """--cache ram (decoded images, short side bounded by the eval resize size, in memory) or disk (decoded
        original pixels as .npy next to each image, BGR as the detection loader's, written atomically)."""
        if mode not in ("ram", "disk"):
            raise UserError(f"--cache {mode} is not a cache mode — use --cache ram or --cache disk")
        if mode == "ram":
            self._cache_ram()
        else:
            self._cache_disk()
        if len(self.unreadable) == len(self.files):
            raise UserError(f"{self.prefix}no image of {self.root} can be read — see the warnings above")

    def _for_ram(self, i: int) -> torch.Tensor | None:
        """Image i as --cache ram keeps it: shrunk (never enlarged) so its short side is the eval resize size, with
        the eval transform's filter. The eval Resize then leaves it as is: cached eval tensors equal uncached ones."""
        im = self._read(i)
        if im is None or min(im.shape[1:]) <= self.resize_size:
            return im
        interp = v2.InterpolationMode(self.opts.interpolation)
        return TF.resize(im, [self.resize_size], interpolation=interp, antialias=True)

    def _cache_ram(self) -> None:
        """Cache in file order until the memory budget is spent (then one warning; the rest is read from disk).

        The budget is the available memory less a margin, shared by the local DDP ranks (each caches its own copy).
        Sizes are only known after decoding (no scan reads them, and small images such as CIFAR's stay far below
        the bound), so the check runs as the images arrive."""
        avail = psutil.virtual_memory().available
        budget = avail / (1 + _RAM_MARGIN) / int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        self.cache_mode, used, n = "ram", 0, 0
        with ThreadPool(max(1, min(8, os.cpu_count() or 1))) as pool:
            for i, im in enumerate(pool.imap(self._for_ram, range(len(self.files)), chunksize=16)):
                if im is None:  # unreadable
                    self.report([self.files[i]])
                    continue
                if used + im.nbytes > budget:
                    LOGGER.warning(
                        f"{self.prefix}WARNING ⚠️ --cache ram: memory full after {n} of {len(self.files)} images "
                        f"({used / 1e9:.1f}GB of {avail / 1e9:.1f}GB available); the rest are read from disk "
                        f"(try --cache disk or a smaller --imgsz)"
                    )
                    break
                self.ims[i], used, n = im, used + im.nbytes, n + 1
        LOGGER.info(f"{self.prefix}Caching images ({used / 1e9:.2f}GB ram, {n} images)")

    def _npy_file(self, i: int) -> Path:
        return Path(self.files[i]).with_suffix(".npy")

    def _read_npy(self, i: int) -> np.ndarray | None:
        """--cache disk pixels of image i, or None (then the original is read)."""
        return read_npy_image(self._npy_file(i))

    def _cache_one_disk(self, i: int) -> int:
        """Bytes of image i's .npy (written if missing); 0 when the image is unreadable, -1 when the write failed."""
        f = self._npy_file(i)
        if not f.exists():
            im = imread(self.files[i])
            if im is None:
                self.unreadable.add(i)
                return 0
            return write_npy_image(f, im)
        return f.stat().st_size

    def _cache_disk(self) -> None:
        self.cache_mode = "disk"
        with ThreadPool(max(1, min(8, os.cpu_count() or 1))) as pool:
            sizes = pool.map(self._cache_one_disk, range(len(self.files)))
        self.report([self.files[i] for i in sorted(self.unreadable)])
        if any(s < 0 for s in sizes):
            LOGGER.warning(
                f"{self.prefix}WARNING ⚠️ could not write some .npy files next to the images (read-only folder?); "
                f"those images are read from the originals"
            )
        LOGGER.info(f"{self.prefix}Caching images ({sum(max(s, 0) for s in sizes) / 1e9:.2f}GB disk)")


# ------------------------------------------------------------------------------------------------ loader
def collate_classify(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple[str, ...]]:
    """(images (B, 3, H, W), labels (B,), failed paths); samples without an image (unreadable while validating)
    are left out, a batch with none left has images and labels None."""
    failed = tuple(f for b in batch for f in b[2])
    kept = [b for b in batch if b[0] is not None]
    if not kept:
        return None, None, failed
    # default_collate stacks into shared memory inside a worker: no second copy when the batch is sent
    return default_collate([b[0] for b in kept]), torch.tensor([b[1] for b in kept]), failed


class ClassifyLoader(DataLoader):
    """DataLoader yielding (images, labels): warns once per unreadable file (in this process) and leaves out
    batches whose every image was unreadable."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, failed in super().__iter__():
            if failed:
                self.dataset.report(failed)
            if images is not None:
                yield images, labels


class ShardSampler(Sampler):
    """Evaluation under DDP: rank r takes images r, r + world, r + 2·world, ... — every image on exactly one rank,
    no padding (DistributedSampler repeats images to even the ranks out, which would count them twice)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def create_classify_loader(
    root_split: str | Path,
    imgsz: int,
    batch_size: int,
    augment: bool = False,
    names: dict[int, str] | None = None,
    opts: ClassifyAugment | None = None,
    workers: int = 8,
    cache: Any = False,
    rank: int = -1,
    world_size: int | None = None,
    seed: int = 0,
    prefix: str = "",
    normalize: bool = True,
) -> tuple[ClassifyLoader, ClassifyDataset]:
    """(loader, dataset) of one split folder; pass the train split's `names` for val so the indices agree.

    augment (training): shuffled, last incomplete batch dropped (a batch of one breaks BatchNorm), under DDP a
    DistributedSampler (call loader.sampler.set_epoch(epoch) each epoch). Evaluation: in order, under DDP a
    ShardSampler. normalize=False: uint8 batches, for normalize_batch on the device. world_size None:
    torch.distributed's when initialised, else 1. Workers = min(CPU cores / ranks,
    batch size (0 for batch 1), workers), persistent; the generator is seeded from seed and rank."""
    ddp_ready = dist.is_available() and dist.is_initialized()
    world = world_size if world_size is not None else (dist.get_world_size() if ddp_ready else 1)
    sharded = world > 1 and rank >= 0
    if sharded and ddp_ready and rank > 0:
        dist.barrier()  # rank 0 writes the --cache disk files first; the other ranks then read them
    dataset = ClassifyDataset(
        root_split, imgsz, augment=augment, names=names, opts=opts, cache=cache, prefix=prefix, normalize=normalize
    )
    if sharded and ddp_ready and rank == 0:
        dist.barrier()
    sampler: Sampler | None = None
    if sharded:
        sampler = (
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            if augment
            else ShardSampler(len(dataset), rank, world)
        )
    per_rank = len(sampler) if sampler is not None else len(dataset)
    batch_size = max(1, min(batch_size, per_rank))
    loader = ClassifyLoader(
        dataset,
        batch_size=batch_size,
        shuffle=augment and sampler is None,
        sampler=sampler,
        collate_fn=collate_classify,
        drop_last=augment,
        **loader_options(batch_size, workers, world, seed, rank),
    )
    return loader, dataset
