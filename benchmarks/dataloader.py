"""Training-loader throughput (mosaic on): the one-step mosaic vs the reference canvas + warp, in the same run.

    python benchmarks/dataloader.py                      # 400 generated shapes images (256 px), 640 px, batch 16
    python benchmarks/dataloader.py --repeats 5 --workers 4
    python benchmarks/dataloader.py --big                # 1280 px JPEGs: adds reduced vs full JPEG decoding
    python benchmarks/dataloader.py --source datasets/shapes/images/train

Variants, each a fresh loader (one untimed epoch: workers start, label cache; then --epochs timed ones), run in
alternating order (ABC, CBA, ABC, ...) --repeats times; the table has each variant's median and its ratio to the
reference measured in the same run, and plain cv2.imread + cv2.resize of every file (one process) for scale:
  fast        what training uses: utils.dataloaders.mosaic (each tile resized once into the output), reduced JPEG
              decoding
  reference   benchmarks/reference.py CanvasMosaicDataset: 2s x 2s canvas of resized tiles, then warpAffine
  full-decode (--big only) fast mosaic, but JPEGs always decoded at full size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from benchmarks.reference import CanvasMosaicDataset
from benchmarks.vs_yolov5 import loader_images_per_s
from data.scripts.make_shapes import generate_shapes
from utils.core.files import yaml_load
from utils.dataloaders.dataset import LoadImagesAndLabels, create_dataloader, find_images


def loader_rate(source: Path, a: argparse.Namespace, variant: str) -> float:
    """Images/s of the augmenting training loader (hyp.scratch-low: mosaic 1.0) in one variant."""
    hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    full_decode, one_step = LoadImagesAndLabels._reduce_factor, LoadImagesAndLabels._one_step_mosaic
    # the loader builds its own dataset: the variant is set on the class before the workers fork, so they inherit it
    if variant == "full-decode":
        LoadImagesAndLabels._reduce_factor = lambda self, i: 1
    if variant == "reference":
        LoadImagesAndLabels._one_step_mosaic = CanvasMosaicDataset._one_step_mosaic
    try:
        loader, _ = create_dataloader(
            source, a.imgsz, a.batch, 32, hyp=hyp, augment=True, workers=a.workers, shuffle=True, seed=0
        )
        return loader_images_per_s(loader, a.epochs)  # as vs_yolov5.py measures both repos' loaders
    finally:
        LoadImagesAndLabels._reduce_factor, LoadImagesAndLabels._one_step_mosaic = full_decode, one_step


def plain_rate(files: list[str], imgsz: int) -> float:
    """Images/s of cv2.imread + cv2.resize to imgsz x imgsz, one process, files already in the OS cache."""
    for f in files[:8]:
        cv2.imread(f)
    t0 = time.perf_counter()
    for f in files:
        cv2.resize(cv2.imread(f), (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
    return len(files) / (time.perf_counter() - t0)


def big_jpegs(root: Path, n: int, size: int = 1280) -> Path:
    """n JPEGs of size x 3/4 size (smooth noise + a few boxes) with labels, for the reduced-decode comparison."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        im = cv2.resize(
            rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (size, size * 3 // 4), interpolation=cv2.INTER_CUBIC
        )
        cv2.imwrite(str(root / "images" / f"{i:05d}.jpg"), im)
        (root / "labels" / f"{i:05d}.txt").write_text("0 0.5 0.5 0.3 0.4\n1 0.25 0.3 0.1 0.2\n")
    return root / "images"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=str, default="", help="image folder (default: generate shapes into a temp dir)")
    p.add_argument("--n", type=int, default=400, help="images to generate when no --source")
    p.add_argument("--big", action="store_true", help="generate 1280 px JPEGs instead (reduced decoding applies)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per measurement")
    p.add_argument("--repeats", type=int, default=3, help="measurements per variant (median; >= 3)")
    a = p.parse_args(argv)
    variants = ["fast", "reference"] + (["full-decode"] if a.big else [])
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(a.source) if a.source else None
        if source is None and a.big:
            source = big_jpegs(Path(tmp) / "big", a.n)
        elif source is None:
            source = generate_shapes(Path(tmp) / "shapes", n_train=a.n, n_val=0) / "images" / "train"
        files = find_images(source)
        rates: dict[str, list[float]] = {v: [] for v in variants + ["plain"]}
        for k in range(a.repeats):
            for v in variants if k % 2 == 0 else variants[::-1]:
                rates[v].append(loader_rate(source, a, v))
                print(f"  run {k + 1} {v:11s} {rates[v][-1]:8.1f} images/s", flush=True)
            rates["plain"].append(plain_rate(files, a.imgsz))
    ref = statistics.median(rates["reference"])
    print(f"\n{len(files)} images -> {a.imgsz}px, batch {a.batch}, {a.workers} workers, median of {a.repeats}")
    print("| variant | images/s (median, range) | ratio to reference |\n|---|---|---|")
    for v, r in rates.items():
        print(f"| {v} | {statistics.median(r):.1f} ({min(r):.1f}–{max(r):.1f}) | {statistics.median(r) / ref:.2f} |")


if __name__ == "__main__":
    main()
