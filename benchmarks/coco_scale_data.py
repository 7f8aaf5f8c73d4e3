"""COCO-scale data handling: label scan rate, label cache size and reload time, RSS, time to the first batch.

    python benchmarks/coco_scale_data.py                      # generates into a temp folder (~1 GB, minutes)
    python benchmarks/coco_scale_data.py --root /data/cocofake --keep --repeats 3

The generated dataset has COCO train2017's counts: 118,287 label files, 860,001 boxes, about 1% of images without
boxes, boxes per image drawn from a long-tailed (geometric-like) distribution with mean 7.3 and at most 93, all
from a seeded generator (no COCO download). Images are 32 x 32 JPEGs: 64 distinct files, hard-linked under
118,287 names (the label check decodes each name; the cache hash sees each path and size).

Measured, each in a fresh process (figures are medians of --repeats runs; warm runs alternate with each other):
  scan (cold)    building the dataset with no label cache: files/s, against reading every label file with
                 plain Python in the same run (the floor for any scanner) -> ratio
  cache          size of labels/train2017.cache
  reload (warm)  building the dataset from the cache: seconds
  RSS            process resident memory after the warm build, and its growth over the imports alone
  first batch    create_dataloader (mosaic, batch 16, 2 workers, warm cache) until the first batch: seconds,
                 and from the process start (imports included)
Goals (issue #13): first epoch starts <= 60 s with a warm cache on 2 cores, reload <= 3 s, RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real import is inside the measured functions (see the module docstring)
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, N_BOXES, MAX_BOXES, EMPTY_SHARE = 118_287, 860_001, 93, 0.0086  # COCO train2017
SPLIT = "train2017"


# ------------------------------------------------------------------------------------------------ data
def box_counts(n: int, total: int, seed: int = 0) -> np.ndarray:
    """Boxes per image: ~EMPTY_SHARE zeros, the rest 1 + geometric-like (negative binomial r=0.9) capped at
    MAX_BOXES, then nudged one box at a time on random images until the sum is exactly `total`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mean_rest = total / (n * (1 - EMPTY_SHARE)) - 1
    r = 0.9
    counts = 1 + rng.negative_binomial(r, r / (r + mean_rest), n)
    counts = np.minimum(counts, MAX_BOXES)
    counts[rng.choice(n, round(n * EMPTY_SHARE), replace=False)] = 0
    while (diff := total - int(counts.sum())) != 0:
        ok = np.flatnonzero((counts > 1) if diff < 0 else (counts > 0) & (counts < MAX_BOXES))
        pick = rng.choice(ok, min(abs(diff), len(ok)), replace=False)
        counts[pick] += 1 if diff > 0 else -1
    return counts


def _label_text(rng: np.random.Generator, k: int) -> str:
    """k YOLO rows: class 0-79, box inside the image (normalised cx cy w h)."""
    wh = rng.uniform(0.01, 0.5, (k, 2))
    c = rng.uniform(wh / 2, 1 - wh / 2)
    cls = rng.integers(0, 80, k)
    return "".join(f"{int(a)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for a, (x, y), (w, h) in zip(cls, c, wh))


def generate(root: Path, n: int = N_IMAGES, total: int = N_BOXES, seed: int = 0) -> Path:
    """images/train2017/*.jpg (hard links to 64 tiny JPEGs) + labels/train2017/*.txt; returns the images folder.
    A finished tree (marker file) is reused."""
    import cv2
    import numpy as np

    images, labels, done = root / "images" / SPLIT, root / "labels" / SPLIT, root / f".generated-{n}-{total}-{seed}"
    if done.is_file():
        return images
    shutil.rmtree(root / "images", ignore_errors=True)
    shutil.rmtree(root / "labels", ignore_errors=True)
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    protos = []
    for j in range(64):
        f = root / f".proto{j}.jpg"
        cv2.imwrite(str(f), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        protos.append(f)
    t0 = time.perf_counter()
    for i, k in enumerate(box_counts(n, total, seed)):
        name = f"{i:012d}"
        os.link(protos[i % len(protos)], images / f"{name}.jpg")
        if k:
            (labels / f"{name}.txt").write_text(_label_text(rng, int(k)))
        elif i % 2:  # half of the empty images have an empty label file, half none (both are backgrounds)
            (labels / f"{name}.txt").write_text("")
    done.write_text("")
    print(f"generated {n} images, {total} boxes in {time.perf_counter() - t0:.0f}s under {root}", flush=True)
    return images


# ------------------------------------------------------------------------------------------------ child side
def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child_build(images: str) -> dict:
    """Build the dataset (cold or warm, whatever the cache state is) -> seconds and RSS before / after."""
    from utils.dataloaders.dataset import LoadImagesAndLabels

    rss0 = _rss()  # torch, OpenCV, ... loaded: what follows is the dataset's own memory
    t0 = time.perf_counter()
    ds = LoadImagesAndLabels(images, 640, 16)
    t = time.perf_counter() - t0
    return {
        "seconds": t,
        "rss_imports": rss0,
        "rss": _rss(),
        "images": ds.n,
        "boxes": int(sum(len(lb) for lb in ds.labels)),
    }


def child_first_batch(images: str, start: float) -> dict:
    """create_dataloader as training builds it (mosaic, hyp.scratch-low, 2 workers) until the first batch."""
    from utils.core.files import yaml_load
    from utils.dataloaders.dataset import create_dataloader

    hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    t0 = time.perf_counter()
    loader, _ = create_dataloader(images, 640, 16, 32, hyp=hyp, augment=True, workers=2, shuffle=True)
    next(iter(loader))
    now = time.perf_counter()
    return {"seconds": now - t0, "since_start": time.time() - start, "rss": _rss()}


def child_raw_read(images: str) -> dict:
    """The floor for a scanner: list the label folder and read every label file, plain Python."""
    labels = Path(images).parent.parent / "labels" / SPLIT
    t0 = time.perf_counter()
    n = 0
    for entry in os.scandir(labels):
        with open(entry.path, "rb") as f:
            f.read()
        n += 1
    return {"seconds": time.perf_counter() - t0, "files": n}


# ------------------------------------------------------------------------------------------------ parent side
def run_child(what: str, images: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        what,
        "--images",
        str(images),
        "--start",
        repr(time.time()),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        sys.exit(f"{what} failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    out = json.loads(lines[-1])
    print(
        f"  {what:12s} " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()),
        flush=True,
    )
    return out


def measure(images: Path, repeats: int) -> dict[str, list[dict]]:
    """Cold scans (cache deleted before each, alternating with the raw read), then warm builds alternating with
    first batches."""
    cache = images.parent.parent / "labels" / f"{SPLIT}.cache"
    res: dict[str, list[dict]] = {"cold": [], "raw": [], "warm": [], "first": []}
    for k in range(repeats):
        cache.unlink(missing_ok=True)
        for what in ("cold", "raw") if k % 2 == 0 else ("raw", "cold"):
            res[what].append(run_child("build" if what == "cold" else "raw-read", images))
    res["cache_bytes"] = cache.stat().st_size
    for k in range(repeats):
        for what in ("warm", "first") if k % 2 == 0 else ("first", "warm"):
            res[what].append(run_child("build" if what == "warm" else "first-batch", images))
    return res


def report(res: dict, n: int) -> str:
    med = lambda key, field: statistics.median(r[field] for r in res[key])  # noqa: E731
    scan_rate, raw_rate = n / med("cold", "seconds"), n / med("raw", "seconds")
    warm = res["warm"][0]
    rows = [
        (
            "label scan, cold (no cache)",
            f"{scan_rate:,.0f} files/s ({med('cold', 'seconds'):.1f} s)",
            f"{scan_rate / raw_rate:.2f} of plain reading ({raw_rate:,.0f} files/s)",
        ),
        ("label cache size", f"{res['cache_bytes'] / 1e6:.1f} MB", f"{warm['boxes']:,} boxes"),
        ("reload, warm cache", f"{med('warm', 'seconds'):.2f} s", "goal <= 3 s"),
        (
            "RSS after loading",
            f"{med('warm', 'rss') / 2**30:.2f} GiB",
            f"+{(med('warm', 'rss') - med('warm', 'rss_imports')) / 2**20:.0f} MiB over the imports; goal <= 1.5 GB",
        ),
        (
            "first batch, warm cache",
            f"{med('first', 'seconds'):.1f} s",
            f"{med('first', 'since_start'):.1f} s from process start; goal <= 60 s",
        ),
    ]
    lines = ["| figure | value | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="", help="dataset folder (default: a temp folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the generated --root for the next run")
    p.add_argument("--n", type=int, default=N_IMAGES, help="label files (default: COCO train2017's)")
    p.add_argument("--boxes", type=int, default=N_BOXES, help="boxes in all (default: COCO train2017's)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--images", default="", help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if a.child:
        fn = {
            "build": lambda: child_build(a.images),
            "raw-read": lambda: child_raw_read(a.images),
            "first-batch": lambda: child_first_batch(a.images, a.start),
        }[a.child]
        print(json.dumps(fn()))
        return
    tmp = None if a.root else tempfile.mkdtemp(prefix="coco_scale_")
    root = Path(a.root or tmp)
    try:
        images = generate(root, a.n, a.boxes)
        res = measure(images, a.repeats)
        print(f"\n{a.n:,} label files, {os.cpu_count()} CPUs, median of {a.repeats} runs each\n")
        print(report(res, a.n))
    finally:
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
