"""Benchmark: sliced inference (detect.py / val.py --slice) on large images with small objects.

    python benchmarks/slicing.py                    # the quick-start model (runs/train/quick/weights/best.pt)
    python benchmarks/slicing.py --weights best.pt --tile 256 256 --n 20 --runs 3 --device cpu

Writes (once; deterministic from --seed) --n validation images of 1280-2048 px a side into --out with
data/scripts/make_shapes.draw_canvas: 15-40 objects of 12-40 px and up to two of 300-600 px each. Then, per variant,
1. mAP50 and mAP50-95 by val.run (conf 0.001, IoU 0.6: the labels and settings are the same for every variant);
2. images/s with detect.py's settings (Detector, conf 0.25, one image per call): --runs rounds, each running every
   variant over all images in a rotated order, so background load hits all alike; the median round.
Variants: the whole image at the model's size (--imgsz, default the size the weights were trained at); the whole
image at the tiles' scale (imgsz x largest side / tile width, stride-rounded: objects as large as in a tile, one big
forward, only for a model that takes any input size); sliced with each merge (--slice-merge nms / nmm).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

import val
from benchmarks.common import cpu_name
from data.scripts.make_shapes import JPEG_QUALITY, NAMES, draw_canvas
from models.checkpoint import trained_imgsz
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import UserError, cli_main
from utils.core.files import atomic_target
from utils.core.image_io import imread, imwrite_atomic
from utils.core.log import LOGGER
from utils.core.timing import Profile
from utils.inference import slicing
from utils.inference.api import Detector
from utils.inference.slicing import DEFAULT_OVERLAP, MERGES

CANVAS = (1280, 2048)  # px, each side drawn in this range
SMALL = ((15, 40), (12, 40))  # objects per image, extent px (log-uniform): what a shrunk image loses
LARGE = ((0, 2), (300, 600))  # a few large objects, which only the whole-image pass sees whole
DATA_DIR = ROOT / "datasets" / "shapes-large"


@dataclass
class Variant:
    """One way of running the model, and what it measured."""

    name: str
    imgsz: int
    slice: tuple[int, int] | None = None
    merge: str = "nmm"
    piece_conf: float | None = None  # --ablation: slicing.PIECE_CONF for this run (mAP only)
    map50: float = 0.0
    map5095: float = 0.0
    ips: float | None = None  # images per second


def check_opts(weights: str | Path, tile: list[int], n: int, runs: int, overlap: float, device: str) -> str:
    """Every flag, checked before anything is generated or loaded; returns the device spec."""
    if not Path(weights).exists():
        raise UserError(
            f"--weights {weights}: no such model — train the quick-start model first (python train.py --name quick "
            f"writes runs/train/quick/weights/best.pt) or pass one"
        )
    if len(tile) != 2:
        A.fail("tile", tile, "give the tile width and height", "e.g. --tile 256 256")
    for t in tile:
        A.check_int("tile", t, lo=32, todo="e.g. --tile 256 256")
    A.check_int("n", n, lo=1, todo="e.g. --n 20")
    A.check_int("runs", runs, lo=3, todo="a median needs at least 3 rounds, e.g. --runs 3")
    A.check_float("overlap", overlap, 0.0, 1.0, hi_open=True, todo="e.g. --overlap 0.2")
    return check_device(device)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One large image and its labels."""
    w, h = (int(v) for v in rng.integers(CANVAS[0], CANVAS[1] + 1, 2))
    (n0, n1), (s0, s1) = SMALL
    (m0, m1), (l0, l1) = LARGE
    small = np.exp(rng.uniform(np.log(s0), np.log(s1), int(rng.integers(n0, n1 + 1))))
    large = rng.uniform(l0, l1, int(rng.integers(m0, m1 + 1)))
    return draw_canvas(rng, w, h, np.concatenate((small, large)))


def _write(folder: Path, n: int, seed: int) -> None:
    for split in ("images", "labels"):
        (folder / split / "val").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, labels = _scene(np.random.default_rng([seed, i]))
        imwrite_atomic(folder / "images" / "val" / f"{i:05d}.jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels]
        (folder / "labels" / "val" / f"{i:05d}.txt").write_text("".join(rows))


def large_dataset(root: Path, n: int, seed: int) -> dict:
    """The data dict of n large images under root/<seed>_<n>/ (written once, into a temp folder renamed at the
    end, so an interrupted run leaves nothing that looks complete)."""
    folder = root / f"seed{seed}_n{n}"
    if not folder.is_dir():
        with atomic_target(folder, folder=True) as tmp:
            _write(Path(tmp), n, seed)
        LOGGER.info(f"{n} images of {CANVAS[0]}-{CANVAS[1]} px written to {folder}")
    images = str(folder / "images" / "val")
    return {"path": str(folder), "train": images, "val": images, "names": dict(NAMES), "nc": len(NAMES)}


def variants(imgsz: int, tile: tuple[int, int], any_shape: bool) -> list[Variant]:
    """The whole image at the model's size (and at the tiles' scale when the model takes any size), then each merge."""
    out = [Variant(f"whole image, imgsz {imgsz}", imgsz)]
    big = A.round_up(imgsz * CANVAS[1] / tile[0], 32)
    if any_shape and big > imgsz:
        out.append(Variant(f"whole image, imgsz {big} (tile scale)", big))
    return out + [Variant(f"slice {tile[0]}x{tile[1]}, {m}", imgsz, tile, m) for m in sorted(MERGES)]


def measure_map(v: Variant, weights: Path, data: dict, overlap: float, device: str, workdir: Path) -> None:
    kept = slicing.PIECE_CONF
    slicing.PIECE_CONF = kept if v.piece_conf is None else v.piece_conf
    try:
        res = _val(v, weights, data, overlap, device, workdir)
    finally:
        slicing.PIECE_CONF = kept
    v.map50, v.map5095 = float(res[2]), float(res[3])


def _val(v: Variant, weights: Path, data: dict, overlap: float, device: str, workdir: Path) -> tuple:
    return val.run(
        data=data,
        weights=weights,
        imgsz=v.imgsz,
        batch_size=4,
        device=device,
        workers=0,
        plots=False,
        slice=v.slice,
        slice_overlap=overlap,
        slice_merge=v.merge,
        project=workdir,
        name="val",
    )[0]


def measure_speed(vs: list[Variant], weights: Path, data: dict, overlap: float, device: str, runs: int) -> None:
    """images/s of each variant with detect's settings: the median of `runs` rotated rounds over all images."""
    ims = [imread(f) for f in sorted(Path(data["val"]).glob("*.jpg"))]
    dev = select_device(device, verbose=False)
    dets = [Detector(weights, dev, v.imgsz, slice=v.slice, slice_overlap=overlap, slice_merge=v.merge) for v in vs]
    for d in dets:
        d(ims[0], bgr=True)  # warmup: lazy initialisation, allocator
    seconds: list[list[float]] = [[] for _ in vs]
    for r in range(runs):
        order = list(range(len(vs)))
        for i in order[r % len(order) :] + order[: r % len(order)]:
            with Profile(dev) as timer:
                for im in ims:
                    dets[i](im, bgr=True)
            seconds[i].append(timer.dt)
    for v, s in zip(vs, seconds):
        v.ips = len(ims) / statistics.median(s)


def table(vs: list[Variant]) -> str:
    lines = ["| variant | mAP50 | mAP50-95 | images/s | time vs whole image |", "|---|---|---|---|---|"]
    base = vs[0].ips
    for v in vs:
        speed = f"{v.ips:.2f} | {base / v.ips:.1f}x" if v.ips and base else "— | —"
        lines.append(f"| {v.name} | {v.map50:.3f} | {v.map5095:.3f} | {speed} |")
    return "\n".join(lines)


def run(
    weights: str | Path = str(ROOT / "runs" / "train" / "quick" / "weights" / "best.pt"),
    imgsz: int | None = None,
    tile: list[int] | tuple[int, ...] = (256, 256),
    overlap: float = DEFAULT_OVERLAP,
    n: int = 20,
    runs: int = 3,
    seed: int = 0,
    out: str | Path = str(DATA_DIR),
    device: str = "cpu",
    ablation: bool = False,
) -> list[Variant]:
    """Measure every variant; prints and returns them (the table's rows). ablation: also the nmm merge whose pieces
    join whatever their confidence (PIECE_CONF 0), mAP only."""
    device = check_opts(weights, list(tile), n, runs, overlap, device)
    imgsz = imgsz or trained_imgsz(weights) or 640
    A.check_imgsz(imgsz)
    data = large_dataset(Path(out), n, seed)
    probe = Detector(weights, select_device(device, verbose=False), imgsz)
    vs = variants(imgsz, (int(tile[0]), int(tile[1])), probe.backend.any_shape)
    nmm = next(v for v in vs if v.slice and v.merge == "nmm")
    extra = [Variant(f"{nmm.name}, pieces of any confidence", imgsz, nmm.slice, "nmm", 0.0)] if ablation else []
    with tempfile.TemporaryDirectory() as tmp:
        for v in vs + extra:
            measure_map(v, Path(weights), data, overlap, device, Path(tmp))
    measure_speed(vs, Path(weights), data, overlap, device, runs)
    vs += extra
    LOGGER.info(
        f"\n{n} images {CANVAS[0]}-{CANVAS[1]} px, {Path(weights)} at imgsz {imgsz}, overlap {overlap}, "
        f"{cpu_name()}, {torch.get_num_threads()} threads, device {device or 'default'}\n{table(vs)}"
    )
    return vs


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = A.ArgParser(description=__doc__, defaults=A.signature_defaults(run))
    p.add_argument("--weights", type=str, help="model file (default: the quick-start model)")
    p.add_argument("--imgsz", type=int, help="model input size (default: the size the weights were trained at)")
    p.add_argument("--tile", nargs="+", type=int, help="slice tile width and height in pixels")
    p.add_argument("--overlap", type=float, help="tile overlap fraction")
    p.add_argument("--n", type=int, help="number of generated images")
    p.add_argument("--runs", type=int, help="timing rounds (median)")
    p.add_argument("--seed", type=int, help="generator seed")
    p.add_argument("--out", type=str, help="folder for the generated images")
    p.add_argument("--device", type=str, help="cpu or a cuda device")
    p.add_argument("--ablation", action="store_true", help="also nmm with pieces of any confidence (mAP only)")
    return p.parse_args(argv)


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
