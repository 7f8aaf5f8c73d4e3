"""YOLO-format detection dataset (images/ + labels/ like YOLOv5), its augmentation pipeline and the dataloader."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from utils.core.boxes import xyn2xy, xywhn2xyxy, xyxy2xywhn
from utils.core.errors import UserError
from utils.core.files import IMG_FORMATS, ROOT, file_ext, find_files, yaml_load
from utils.core.image_io import imread, read_npy_image, write_npy_image
from utils.core.log import LOGGER
from utils.dataloaders import augment as aug
from utils.dataloaders.label_check import load_labels
from utils.dataloaders.mosaic import mosaic_perspective

AUGMENT_DEFAULTS_YAML = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"  # values for augmentation keys a hyp lacks
PIN_MEMORY = torch.cuda.is_available()
_NOT_IMAGES = ("", "txt", "npy", "cache", "json", "yaml", "yml", "md", "csv")  # never warned about in image folders
_MAX_SUBSTITUTES = 100  # training: unreadable images replaced in a row before giving up on the dataset
_RAM_MARGIN = 0.2  # --cache ram leaves this share on top of the images for the model, workers and the rest


class _Unreadable(Exception):
    """An image that passed the label scan can no longer be read (deleted or changed during the run)."""


def img2label_paths(img_paths: Sequence[str]) -> list[str]:
    """.../images/x.jpg -> .../labels/x.txt (the last /images/ only, like YOLOv5)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for p in img_paths:
        p = str(p)
        head, sep, tail = p.rpartition(sa)
        base = f"{head}{sb}{tail}" if sep else p
        out.append(os.path.splitext(base)[0] + ".txt")
    return out


def find_images(path: str | Path | Sequence[str | Path], prefix: str = "") -> list[str]:
    """Sorted image files of a directory (recursive), a glob, a .txt list of images, a single image, or a list of
    these (utils.core.files.find_files); warns about skipped files, UserError when a path is missing or no image."""
    found = find_files(path, IMG_FORMATS, quiet=_NOT_IMAGES)
    if found.missing:
        raise UserError(
            f"{prefix}dataset path not found: {found.missing[0]} — check the path (and 'path:' in the data yaml)"
        )
    if found.others:
        LOGGER.warning(
            f"{prefix}WARNING ⚠️ {len(found.others)} files with unsupported extensions skipped (e.g. "
            f"{found.others[0]}) — supported formats: {', '.join(IMG_FORMATS)}"
        )
    files = sorted({os.path.normpath(f) for f in found.files})
    if not files:
        raise UserError(f"{prefix}no images found in {path} — supported formats: {', '.join(IMG_FORMATS)}")
    return files


def rect_batch_shapes(
    shapes_wh: np.ndarray, batch_size: int, img_size: int, stride: int, pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """Aspect-ratio sort order and per-batch (h, w) shapes: ceil(shape * img_size / stride + pad) * stride (YOLOv5).

    Within a batch the image shape is [h/w max, 1] when all are wide, [1, w/h max] when all are tall, else square.
    """
    ar = shapes_wh[:, 1] / shapes_wh[:, 0]  # h / w
    order = ar.argsort(kind="stable")
    ar = ar[order]
    bi = np.arange(len(ar)) // batch_size
    shapes = np.ones((int(bi[-1]) + 1, 2))
    for i in range(len(shapes)):
        lo, hi = ar[bi == i].min(), ar[bi == i].max()
        if hi < 1:
            shapes[i] = [hi, 1]
        elif lo > 1:
            shapes[i] = [1, 1 / lo]
    return order, np.ceil(shapes * img_size / stride + pad).astype(int) * stride


class LoadImagesAndLabels(Dataset):
    """Images + YOLO labels; __getitem__ -> (uint8 (3, H, W) RGB, (n, 6) [0, cls, cx, cy, w, h], file, shapes)."""

    def __init__(
        self,
        path: Any,
        img_size: int = 640,
        batch_size: int = 16,
        augment: bool = False,
        hyp: dict | None = None,
        rect: bool = False,
        cache: Any = False,
        single_cls: bool = False,
        stride: int = 32,
        pad: float = 0.0,
        prefix: str = "",
        nc: int | None = None,
    ):
        self.img_size, self.augment, self.rect = img_size, augment, rect
        self.hyp = self._full_hyp(hyp) if augment else hyp
        self.mosaic = augment and not rect  # rect batches need one shape per batch; a mosaic is always square
        self.mosaic_border = (-img_size // 2, -img_size // 2)
        self.stride, self.prefix, self.path = stride, prefix, path
        im_files = find_images(path, prefix)
        label_files = img2label_paths(im_files)
        lb_dirs = {f.rpartition(os.sep)[0] for f in label_files}  # = os.path.dirname, 10x cheaper per file
        have_dirs = any(os.path.isdir(d) for d in lb_dirs)
        if not have_dirs:
            LOGGER.warning(
                f"{prefix}WARNING ⚠️ labels directory {sorted(lb_dirs)[0]} not found — all "
                f"{len(im_files)} images are backgrounds (labels go in .../labels/ next to .../images/)"
            )
        ls = load_labels(im_files, label_files, nc, prefix, cache=have_dirs)
        if not ls.im_files:
            raise UserError(
                f"{prefix}no usable images in {path}: all {len(im_files)} are corrupt — see the "
                f"warnings above and fix or remove those files"
            )
        self.im_files, self.label_files = ls.im_files, ls.label_files
        self.labels, self.shapes, self.segments = ls.labels, ls.shapes, ls.segments
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        self.n = len(self.im_files)
        self.batch = np.arange(self.n) // batch_size  # batch index of each image
        self.batch_shapes = None
        if rect:
            order, self.batch_shapes = rect_batch_shapes(self.shapes, batch_size, img_size, stride, pad)
            self._keep(order)
        self.ims: list[np.ndarray | None] = [None] * self.n
        self.im_hw0: list[tuple[int, int] | None] = [None] * self.n
        self.im_hw: list[tuple[int, int] | None] = [None] * self.n
        self.cache_mode = None
        self.unreadable: set[int] = set()  # per process: each DataLoader worker warns once per file it meets
        if cache:
            self.cache_images(str(cache).lower() if cache is not True else "ram")

    @staticmethod
    def _full_hyp(hyp: dict | None) -> dict:
        """The given hyp on top of hyp.scratch-low (so a hyp file without some augmentation key still works)."""
        full = dict(yaml_load(AUGMENT_DEFAULTS_YAML))
        full.update(hyp or {})
        return full

    def _keep(self, idx: Sequence[int]) -> None:
        """Keep (and reorder to) the images at idx."""
        idx = list(idx)
        self.im_files = [self.im_files[i] for i in idx]
        self.label_files = [self.label_files[i] for i in idx]
        self.labels = [self.labels[i] for i in idx]
        self.segments = [self.segments[i] for i in idx]
        self.shapes = self.shapes[idx].reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.im_files)

    # -------------------------------------------------------------------------------------------- images
    def cache_images(self, mode: str) -> None:
        """--cache ram (resized images in memory) or disk (original pixels as .npy next to each image).

        ram first checks that the images fit in the available memory; when not, one warning and no cache."""
        if mode not in ("ram", "disk"):
            raise UserError(f"--cache {mode} is not a cache mode — use --cache ram or --cache disk")
        if mode == "ram" and not self._ram_fits():
            return
        self.cache_mode = mode
        fn = self._cache_one_ram if mode == "ram" else self._cache_one_disk
        with ThreadPool(max(1, min(8, os.cpu_count() or 1))) as pool:
            sizes = pool.map(fn, range(self.n))
        if mode == "disk" and not all(s >= 0 for s in sizes):
            LOGGER.warning(
                f"{self.prefix}WARNING ⚠️ could not write some .npy files next to the images "
                f"(read-only folder?); those images are read from the originals"
            )
        LOGGER.info(f"{self.prefix}Caching images ({sum(max(s, 0) for s in sizes) / 1e9:.2f}GB {mode})")

    def _ram_fits(self) -> bool:
        """Whether the resized images (sizes known from the label scan) fit in the available memory with a
        margin; each local DDP rank caches its own copy. Warns once when they do not."""
        need = sum(h * w * 3 for h, w in (self._resized_hw(int(h0), int(w0)) for w0, h0 in self.shapes))
        need *= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        avail = psutil.virtual_memory().available
        if need * (1 + _RAM_MARGIN) <= avail:
            return True
        LOGGER.warning(
            f"{self.prefix}WARNING ⚠️ --cache ram needs {need / 1e9:.1f}GB for {self.n} images at "
            f"{self.img_size} px but {avail / 1e9:.1f}GB of memory is available — not caching images "
            f"(try --cache disk or a smaller --imgsz)"
        )
        return False

    def _npy_file(self, i: int) -> Path:
        """--cache disk file of image i (made on demand: 118k Path objects cost time and memory)."""
        return Path(self.im_files[i]).with_suffix(".npy")

    def _cache_one_ram(self, i: int) -> int:
        try:
            self.ims[i], self.im_hw0[i], self.im_hw[i] = self.load_image(i)
        except _Unreadable:  # warned; __getitem__ skips or replaces it
            return 0
        return self.ims[i].nbytes

    def _cache_one_disk(self, i: int) -> int:
        """Original pixels as .npy next to the image (atomic write); -1 when the folder refuses the write."""
        f = self._npy_file(i)
        if not f.exists():
            try:
                im = self._read(i)
            except _Unreadable:
                return 0
            return write_npy_image(f, im)
        return f.stat().st_size

    def _read(self, i: int, reduce: int = 1) -> np.ndarray:
        """BGR pixels of image i with the label check's reader; _Unreadable (warned once) when that fails now."""
        if i not in self.unreadable:
            im = imread(self.im_files[i], reduce)
            if im is not None:
                return im
            self.unreadable.add(i)
            LOGGER.warning(
                f"{self.prefix}WARNING ⚠️ {self.im_files[i]}: cannot read the image any more "
                f"(removed or changed since the label scan?), skipping it"
            )
        raise _Unreadable(self.im_files[i])

    def _read_npy(self, i: int) -> np.ndarray | None:
        """--cache disk pixels of image i, or None (then the original is read)."""
        return read_npy_image(self._npy_file(i))

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """BGR image i resized so its long side is img_size -> (im, (h0, w0), (h, w))."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        im, (h0, w0) = self._decode(i)
        h, w = self._resized_hw(h0, w0)
        if im.shape[:2] != (h, w):
            # INTER_AREA is the better shrinking filter; training augments anyway, so the faster one there
            interp = cv2.INTER_LINEAR if (self.augment or self.img_size > max(h0, w0)) else cv2.INTER_AREA
            im = cv2.resize(im, (w, h), interpolation=interp)
        return im, (h0, w0), (h, w)

    def _load_source(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Image i as cached or decoded, not yet resized, and the (h, w) that load_image would resize it to
        (the fast mosaic resizes each tile once, straight into the output)."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw[i]
        im, (h0, w0) = self._decode(i)
        return im, self._resized_hw(h0, w0)

    def _resized_hw(self, h0: int, w0: int) -> tuple[int, int]:
        """(h, w) with the long side img_size, each side >= 1 px (even for a 3000x2 image)."""
        r = self.img_size / max(h0, w0)
        if r == 1:
            return h0, w0
        return max(1, min(math.ceil(h0 * r), self.img_size)), max(1, min(math.ceil(w0 * r), self.img_size))

    def _decode(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        """BGR pixels of image i (from its .npy under --cache disk) and its original (h0, w0).

        Training decodes a JPEG at least twice img_size at 1/2, 1/4 or 1/8 size, as long as that is still at least
        img_size (libjpeg scales in the DCT: a fraction of the work, and a good shrinking filter). Validation
        always decodes in full so its pixels, and so its mAP, do not change."""
        im = self._read_npy(i) if self.cache_mode == "disk" else None
        if im is not None:
            return im, im.shape[:2]
        f = self._reduce_factor(i)
        im = self._read(i, f)
        if f == 1:
            return im, im.shape[:2]
        w0, h0 = (int(v) for v in self.shapes[i])
        if im.shape[:2] != (-(-h0 // f), -(-w0 // f)):  # not the scanned image any more: trust the pixels
            h0, w0 = im.shape[0] * f, im.shape[1] * f
        return im, (h0, w0)

    def _reduce_factor(self, i: int) -> int:
        """1, 2, 4 or 8: the JPEG decode reduction for training image i (see _decode)."""
        if not self.augment or file_ext(self.im_files[i]) not in ("jpg", "jpeg"):
            return 1
        long_side = int(max(self.shapes[i]))
        return next((f for f in (8, 4, 2) if long_side >= f * self.img_size), 1)

    # -------------------------------------------------------------------------------------------- samples
    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Any] | None:
        """One sample. An image that became unreadable mid-run is replaced by another when training (the batch stays
        full) and is None when validating (collate_fn drops it: no other image may be counted in its place)."""
        for _ in range(_MAX_SUBSTITUTES):
            try:
                return self._sample(index)
            except _Unreadable:
                if not self.augment:
                    return None
                good = [j for j in range(self.n) if j not in self.unreadable]
                if not good:
                    break
                index = random.choice(good)
        raise UserError(
            f"{self.prefix}images of {self.path} can no longer be read ({len(self.unreadable)} failed, "
            f"e.g. {self.im_files[min(self.unreadable)]}) — was the dataset moved or deleted?"
        )

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Any]:
        hyp, hsv_done = self.hyp, False
        if self.mosaic and random.random() < hyp["mosaic"]:
            # the colour jitter goes into the one-step mosaic's tiles, unless mixup blends a second mosaic in first
            hsv_done = self._one_step_mosaic() and not hyp["mixup"]
            img, labels = self.load_mosaic(index, hsv=hsv_done)
            shapes = None
            if random.random() < hyp["mixup"]:
                img, labels = aug.mixup(img, labels, *self.load_mosaic(random.choice(range(self.n))))
        else:
            img, labels, shapes = self._load_letterboxed(index)
            if self.augment:
                img, labels = aug.random_perspective(
                    img,
                    labels,
                    degrees=hyp["degrees"],
                    translate=hyp["translate"],
                    scale=hyp["scale"],
                    shear=hyp["shear"],
                    perspective=hyp["perspective"],
                )
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        if len(labels):  # pixel xyxy -> normalised xywh of the output image
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            img, labels = self._colour_and_flips(img, labels, hsv=not hsv_done)
        labels_out = torch.zeros((len(labels), 6))
        labels_out[:, 1:] = torch.from_numpy(labels)
        return torch.from_numpy(chw_rgb(img)), labels_out, self.im_files[index], shapes

    def _load_letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Any]:
        """Image letterboxed to its (rect) batch shape, labels as pixel xyxy, and the shapes for rescaling."""
        img, (h0, w0), (h, w) = self.load_image(index)
        shape = tuple(int(x) for x in self.batch_shapes[self.batch[index]]) if self.rect else self.img_size
        img, ratio, pad = aug.letterbox(img, shape, auto=False, scaleup=self.augment)
        shapes = (h0, w0), ((h / h0, w / w0), (float(pad[0]), float(pad[1])))
        labels = self.labels[index].copy()
        if len(labels):
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        return img, labels, shapes

    def load_mosaic(self, index: int, hsv: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """4-image mosaic (this image + 3 random), optional copy-paste, then random perspective to img_size².

        Without copy-paste (which edits the 2s x 2s canvas) utils.dataloaders.mosaic builds it in one step: same random
        draws, same boxes, each tile resized once straight into the output (see there for the pixel difference).
        hsv: apply the HSV jitter too, drawn here; numpy's stream is the same as when _colour_and_flips draws it
        later, as long as nothing in between draws from numpy (the caller excludes mixup)."""
        hyp, s = self.hyp, self.img_size
        ids = [index] + random.choices(range(self.n), k=3)
        random.shuffle(ids)
        fast = self._one_step_mosaic()
        images, sizes, labels, segments = [], [], [], []
        for i in ids:
            if fast:
                img, (h, w) = self._load_source(i)
            else:
                img, _, (h, w) = self.load_image(i)
            lb = self.labels[i].copy()
            if len(lb):
                lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h)
            images.append(img)
            sizes.append((h, w))
            labels.append(lb)
            segments.append([xyn2xy(sg, w, h) for sg in self.segments[i]])
        geometry = dict(
            degrees=hyp["degrees"],
            translate=hyp["translate"],
            scale=hyp["scale"],
            shear=hyp["shear"],
            perspective=hyp["perspective"],
        )
        if fast:
            luts = aug.hsv_luts(hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"]) if hsv else None
            return mosaic_perspective(images, sizes, labels, segments, s, hsv=luts, **geometry)
        img4, labels4, segments4 = aug.mosaic4(images, labels, s, segments=segments)
        if len(segments4) == len(labels4):  # copy-paste needs one polygon per label
            img4, labels4, segments4 = aug.copy_paste(img4, labels4, segments4, p=hyp["copy_paste"])
        return aug.random_perspective(img4, labels4, segments4, border=self.mosaic_border, **geometry)

    def _one_step_mosaic(self) -> bool:
        """Whether mosaics are built in one step (utils.dataloaders.mosaic) rather than on a 2s x 2s canvas that is
        then warped. Copy-paste edits that canvas, so it needs the canvas path. (benchmarks/reference.py overrides
        this: the canvas path is the reference the one-step mosaic is tested and measured against.)"""
        return not self.hyp.get("copy_paste")

    def _colour_and_flips(self, img: np.ndarray, labels: np.ndarray, hsv: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """HSV jitter (unless the mosaic did it) and up-down / left-right flips (labels normalised xywh)."""
        hyp = self.hyp
        if hsv:
            aug.augment_hsv(img, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
        if random.random() < hyp["flipud"]:
            img, labels = aug.flip_ud(img, labels)
        if random.random() < hyp["fliplr"]:
            img, labels = aug.flip_lr(img, labels)
        return img, labels

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple] | None:
        """Stack images; concatenate targets with the image's index in the batch written into column 0.

        Samples that are None (unreadable during validation) are left out; a batch with none left is None, which
        the loader from create_dataloader skips."""
        batch = [b for b in batch if b is not None]
        if not batch:
            return None
        ims, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        # default_collate stacks into shared memory inside a worker: no second copy when the batch is sent
        return default_collate(list(ims)), torch.cat(labels, 0), paths, shapes


def chw_rgb(img: np.ndarray) -> np.ndarray:
    """HWC BGR -> contiguous CHW RGB. cv2.split copies plane by plane: faster than numpy's strided transpose copy."""
    return np.stack(cv2.split(img)[::-1])


# ------------------------------------------------------------------------------------------------ loader
def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from torch's per-worker seed, which follows the loader's seeded
    generator (recent torch does this too; explicit here so determinism does not depend on the torch version)."""
    cv2.setNumThreads(0)  # the workers are the parallelism; OpenCV's own threads would only oversubscribe the cores
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class SkipEmptyLoader(DataLoader):
    """DataLoader that leaves out batches that collate_fn returned as None (all their images became unreadable)."""

    def __iter__(self):
        return (b for b in super().__iter__() if b is not None)


class WeightedIndexSampler(Sampler):
    """--image-weights: yields `indices`, which the trainer redraws each epoch. The sampler lives in the main process,
    so a new draw reaches persistent workers too (an index table inside the dataset would stay stale in them)."""

    def __init__(self, n: int) -> None:
        self.indices: list[int] = list(range(n))

    def __iter__(self):
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


def loader_options(batch_size: int, workers: int, world: int, seed: int, rank: int) -> dict[str, Any]:
    """DataLoader keywords both loaders share: worker processes per rank (the CPUs shared among the ranks, none for
    a batch of one, at most --workers), seeded workers, pinned memory on CUDA, and a seeded shuffling stream that
    differs per rank."""
    nw = min((os.cpu_count() or 1) // max(world, 1), batch_size if batch_size > 1 else 0, workers)
    generator = torch.Generator()
    generator.manual_seed(6148914691236517205 + seed + max(rank, 0))  # YOLOv5's base seed
    return dict(
        num_workers=nw,
        persistent_workers=nw > 0,
        pin_memory=PIN_MEMORY,
        worker_init_fn=seed_worker,
        generator=generator,
    )


def create_dataloader(
    path: Any,
    imgsz: int,
    batch_size: int,
    stride: int,
    single_cls: bool = False,
    hyp: dict | None = None,
    augment: bool = False,
    cache: Any = False,
    pad: float = 0.0,
    rect: bool = False,
    rank: int = -1,
    workers: int = 8,
    image_weights: bool = False,
    prefix: str = "",
    shuffle: bool = False,
    seed: int = 0,
    nc: int | None = None,
) -> tuple[DataLoader, LoadImagesAndLabels]:
    """(DataLoader, dataset) with YOLOv5's worker count rule, DistributedSampler under DDP and seeded workers."""
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING ⚠️ --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    ddp = rank != -1 and dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if ddp else 1
    if ddp and rank not in (-1, 0):
        dist.barrier()  # rank 0 scans the labels and writes the cache first; the others then read it
    dataset = LoadImagesAndLabels(
        path,
        imgsz,
        batch_size,
        augment=augment,
        hyp=hyp,
        rect=rect,
        cache=cache,
        single_cls=single_cls,
        stride=int(stride),
        pad=pad,
        prefix=prefix,
        nc=nc,
    )
    if ddp and rank == 0:
        dist.barrier()
    batch_size = min(batch_size, len(dataset))
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if ddp else None
    if image_weights and not ddp:
        sampler = WeightedIndexSampler(len(dataset))
    loader = SkipEmptyLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=LoadImagesAndLabels.collate_fn,
        **loader_options(batch_size, workers, world, seed, rank),
    )
    return loader, dataset
