"""Validate an image classifier on a folder split: top-1, top-5, per-class accuracy, loss and speed.

    python classify/val.py --weights runs/train-cls/exp/weights/best.pt --data shapes-cls
    python classify/val.py --weights convnext_tiny_1k --data path/to/imagenet --img 224   # published top-1 check
    python classify/val.py --weights best.onnx --data path/to/folder --split test --verbose

--data is a folder laid out root/train/<class>/*, root/val/<class>/* (or test/), a dataset yaml, or a name
(shapes-cls, generated offline; ImageNet.yaml names a folder you provide). --weights takes our classifier checkpoints,
their exports (.torchscript, .onnx, OpenVINO) and the official ImageNet names (convnext_tiny_1k, ...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from any cwd, as `python classify/val.py`

from detect import newest_weights
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.errors import UserError, cli_main
from utils.core.files import increment_path
from utils.core.log import LOGGER, colorstr
from utils.core.plots import plot_confusion_matrix
from utils.dataloaders.classify import EVAL_SPLITS, ClassifyAugment, check_classify_data, create_classify_loader
from utils.evaluation.classify import ClassifyMetrics, confusion_for_plot, evaluate_classifier, format_table
from utils.inference.classify_api import load_classifier


def _check(batch_size: int, imgsz: int | None, workers: int, crop_ratio: float, split: str | None) -> None:
    """Argument checks before any model or data is touched (one line each)."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1")
    if imgsz is not None and imgsz < 16:
        raise UserError(f"--imgsz {imgsz} is too small — use e.g. --imgsz 224")
    if workers < 0:
        raise UserError(f"--workers {workers} must be 0 or more")
    if not 0 < crop_ratio <= 1:
        raise UserError(f"--crop-ratio {crop_ratio} must be in (0, 1] — e.g. 0.875 (224 of 256)")
    if split is not None and split not in EVAL_SPLITS:
        raise UserError(f"--split {split}: use one of {', '.join(EVAL_SPLITS)}")


def _split_folder(data: Any, split: str | None) -> Path:
    """The folder evaluated: --split's, or the dataset's validation split (val/, else test/)."""
    if split is None:
        return Path(data.val)
    folder = Path(data.root) / split
    if not folder.is_dir():
        raise UserError(f"--split {split}: {folder} is not a folder — use --split {Path(data.val).name} or add it")
    return folder


def run(
    data: str | Path = "shapes-cls",
    weights: str | Path | None = None,
    batch_size: int = 64,
    imgsz: int | None = None,
    crop_ratio: float = 0.875,
    split: str | None = None,
    device: str = "",
    workers: int = 8,
    verbose: bool = False,
    project: str | Path = str(ROOT / "runs" / "val-cls"),
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = False,
    plots: bool = True,
) -> ClassifyMetrics:
    """Evaluate `weights` on the validation split of `data`; returns the ClassifyMetrics (also logged as YOLOv5's
    table). The class indices are the train folder's (sorted names), so the model's class count must match."""
    _check(batch_size, imgsz, workers, crop_ratio, split)
    check_device(device)
    cdata = check_classify_data(data)
    folder = _split_folder(cdata, split)
    dev = select_device(device, batch_size=batch_size)
    weights = weights or newest_weights(ROOT / "runs" / "train-cls")
    clf = load_classifier(weights, device=dev, half=half, imgsz=imgsz, crop_ratio=crop_ratio)
    if clf.nc != cdata.nc:
        raise UserError(
            f"{clf.source} has {clf.nc} classes but {cdata.root} has {cdata.nc} ({', '.join(cdata.names.values())})"
            f" — validate a model trained on these classes"
        )
    if list(clf.names.values()) != list(cdata.names.values()) and not all(v.isdigit() for v in clf.names.values()):
        LOGGER.warning("WARNING: the model's class names differ from the folders' — scores use the folder order")
    loader, _ = create_classify_loader(
        folder,
        clf.imgsz,
        batch_size,
        names=cdata.names,
        opts=ClassifyAugment(crop_ratio=crop_ratio),
        workers=workers,
        normalize=False,  # uint8 batches, normalised on the device by evaluate_classifier
    )
    m = evaluate_classifier(clf.logits, loader, cdata.nc, dev, half=clf.fp16, desc=f"{folder.name}")
    for line in format_table(m, cdata.names, verbose=verbose or cdata.nc < 50):
        LOGGER.info(line)
    LOGGER.info(
        "Speed: {:.1f}ms pre-process, {:.1f}ms inference, {:.1f}ms loss per image at shape (1, 3, {s}, {s})".format(
            *m.speed, s=clf.imgsz
        )
    )
    if plots:
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(confusion_for_plot(m), list(cdata.names.values()), save_dir / "confusion_matrix.png")
        LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}")
    return m


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """classify/val.py's flags; every default is run()'s."""
    p = A.ArgParser(description="Validate an image classifier", defaults=A.signature_defaults(run))
    p.add_argument("--data", type=str, help="folder (root/train/<class>/*, root/val/<class>/*), yaml or name")
    p.add_argument("--weights", type=str, help="classifier .pt / export / official name (convnext_tiny_1k)")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="inference size (default: the model's, else 224)")
    p.add_argument("--crop-ratio", type=float, help="centre-crop share: resize to imgsz/crop-ratio, crop imgsz")
    p.add_argument("--split", type=str, help="val or test (default: val/, else test/)")
    p.add_argument("--device", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int, help="max dataloader workers")
    p.add_argument("--verbose", action="store_true", help="per-class accuracy for 50+ classes too")
    p.add_argument("--project", help="save to project/name")
    p.add_argument("--name", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (CUDA only)")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> ClassifyMetrics:
    return run(**vars(opt))


if __name__ == "__main__":
    cli_main(lambda: main(parse_opt()))
