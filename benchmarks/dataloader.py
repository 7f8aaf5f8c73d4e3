"""Training-loader throughput (mosaic on) vs plain cv2.imread + cv2.resize over the same files.

    python benchmarks/dataloader.py                      # 256 generated shapes images, 640 px, batch 16, 2 workers
    python benchmarks/dataloader.py --n 400 --workers 4
    python benchmarks/dataloader.py --source datasets/shapes/images/train

The loader runs one untimed epoch (workers start, label cache written) and then one timed epoch; the baseline
reads and resizes every file once in this process. The ratio loader / baseline is what to compare across machines.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from utils.dataset import create_dataloader, find_images  # noqa: E402
from utils.files import yaml_load  # noqa: E402


def loader_rate(source: Path, imgsz: int, batch: int, workers: int) -> float:
    """Images/s of the augmenting training loader (hyp.scratch-low: mosaic 1.0), second epoch."""
    hyp = yaml_load(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    loader, ds = create_dataloader(source, imgsz, batch, 32, hyp=hyp, augment=True, workers=workers,
                                   shuffle=True, seed=0)
    for _ in loader:  # warm-up epoch: worker start-up and first reads are not what we measure
        pass
    t0, n = time.perf_counter(), 0
    for imgs, *_ in loader:
        n += len(imgs)
    return n / (time.perf_counter() - t0)


def plain_rate(files: list[str], imgsz: int) -> float:
    """Images/s of cv2.imread + cv2.resize to imgsz x imgsz, one process, files already in the OS cache."""
    for f in files[:8]:
        cv2.imread(f)
    t0 = time.perf_counter()
    for f in files:
        cv2.resize(cv2.imread(f), (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
    return len(files) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=str, default="", help="image folder (default: generate shapes into a temp dir)")
    p.add_argument("--n", type=int, default=256, help="images to generate when no --source")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(a.source) if a.source else None
        if source is None:
            from data.scripts.make_shapes import generate_shapes
            source = generate_shapes(Path(tmp) / "shapes", n_train=a.n, n_val=0) / "images" / "train"
        files = find_images(source)
        rate_plain = plain_rate(files, a.imgsz)
        rate_loader = loader_rate(source, a.imgsz, a.batch, a.workers)
    print(f"{len(files)} images -> {a.imgsz}px, batch {a.batch}, {a.workers} workers")
    print(f"training loader (mosaic): {rate_loader:8.1f} images/s")
    print(f"cv2.imread + resize:      {rate_plain:8.1f} images/s")
    print(f"ratio loader / plain:     {rate_loader / rate_plain:8.2f}")


if __name__ == "__main__":
    main()
