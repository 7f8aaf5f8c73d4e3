"""What a training run writes besides weights: opt.yaml, hyp.yaml, results.csv, results.png, labels.jpg,
train_batch*.jpg and (when the tensorboard package is installed) TensorBoard events. Rank 0 only."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils.core.files import atomic_write_text, user_writes, yaml_save
from utils.core.log import LOGGER
from utils.core.plots import plot_images, plot_labels, plot_results

# The one list of a run's result columns. The validation metrics have two names: run()'s result keys (METRIC_KEYS,
# also evolve.csv's rows) and results.csv's YOLOv5 column names (METRIC_COLUMNS), in the same order.
METRIC_KEYS = ("precision", "recall", "mAP50", "mAP50-95", "val_box_loss", "val_obj_loss", "val_cls_loss")
METRIC_COLUMNS = (
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
)
# YOLOv5's results.csv columns after 'epoch': the training losses, the metrics, the first three groups' LRs
RESULT_KEYS = ("train/box_loss", "train/obj_loss", "train/cls_loss", *METRIC_COLUMNS, "x/lr0", "x/lr1", "x/lr2")


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """yaml-safe copy: paths as strings, tuples as lists."""
    out = {}
    for k, v in d.items():
        out[k] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out


def _header(columns: Sequence[str] = RESULT_KEYS) -> list[str]:
    return [f"{k:>20}" for k in ("epoch", *columns)]


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


class TrainOutputs:
    """Writer for one run folder; every method is a no-op when enabled is False (non-zero DDP ranks). columns:
    results.csv's columns after 'epoch' (detection's RESULT_KEYS; a classifier run passes YOLOv5 classify's)."""

    def __init__(
        self, save_dir: str | Path, enabled: bool = True, plots: bool = True, columns: Sequence[str] = RESULT_KEYS
    ):
        self.save_dir, self.enabled, self.plots = Path(save_dir), enabled, plots
        self.columns = tuple(columns)
        self.csv = self.save_dir / "results.csv"
        self.tb = None
        if enabled:
            with user_writes(self.save_dir / "weights"):
                (self.save_dir / "weights").mkdir(parents=True, exist_ok=True)
            self.tb = self._tensorboard()

    def _tensorboard(self):
        """A SummaryWriter when tensorboard is importable (it is optional), else None."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is not a requirement
        except Exception:  # tensorboard missing or broken: training goes on without it
            return None
        LOGGER.info(f"TensorBoard: tensorboard --logdir {self.save_dir.parent}")
        with user_writes(self.save_dir):
            return SummaryWriter(str(self.save_dir))

    def save_settings(self, opt: dict[str, Any], hyp: dict[str, Any]) -> None:
        """opt.yaml and hyp.yaml: what this run was started with (used again by --resume)."""
        if self.enabled:
            yaml_save(self.save_dir / "hyp.yaml", _plain(hyp))
            yaml_save(self.save_dir / "opt.yaml", _plain(opt))

    def _rows(self) -> tuple[list[list[str]], int]:
        """(well-formed data rows of results.csv, number of malformed ones): a row cut off by a crash or a full
        disk has too few columns or a half-written number."""
        with open(self.csv, newline="", errors="replace") as f:
            rows = [r for r in csv.reader(f) if r][1:]
        if rows and not _ends_with_newline(self.csv):
            rows[-1] = []  # every row we write ends with a newline: a last row without one was cut off
        good = [r for r in rows if len(r) == len(self.columns) + 1 and all(_is_number(v) for v in r)]
        return good, len(rows) - len(good)

    def trim_csv(self, start_epoch: int) -> None:
        """On resume: drop rows of epochs that will be trained again, so each epoch appears once; malformed rows
        (a row cut off when the run died) are dropped with a warning. Rewritten atomically."""
        if not (self.enabled and self.csv.is_file()):
            return
        good, bad = self._rows()
        if bad:
            LOGGER.warning(f"WARNING ⚠️ {self.csv}: dropped {bad} malformed row(s) (cut off when the run stopped?)")
        keep = [r for r in good if int(float(r[0])) < start_epoch]
        atomic_write_text(self.csv, "\n".join(",".join(r) for r in [_header(self.columns), *keep]) + "\n")

    def log_epoch(self, epoch: int, values: Sequence[float]) -> None:
        """Append one results.csv row (and TensorBoard scalars): epoch then the columns."""
        if not self.enabled:
            return
        values = [float(v) for v in values]
        new = not self.csv.is_file()
        with user_writes(self.csv):
            # a file that ends mid-line (cut off by a crash) must not glue this row onto the broken one
            lead = "" if new or _ends_with_newline(self.csv) else "\n"
            with open(self.csv, "a", newline="") as f:
                f.write(lead + (",".join(_header(self.columns)) + "\n" if new else ""))
                f.write(",".join([f"{epoch:20d}"] + [f"{v:20.5g}" for v in values]) + "\n")
        if self.tb is not None:
            for k, v in zip(self.columns, values):
                self.tb.add_scalar(k, v, epoch)

    def plot_labels(self, labels: Sequence[np.ndarray], names: dict[int, str]) -> None:
        """labels.jpg from the training set's labels (each (n, 5) cls cx cy w h)."""
        if not (self.enabled and self.plots):
            return
        arr = (
            np.concatenate([np.asarray(x, dtype=float).reshape(-1, 5) for x in labels], 0)
            if len(labels)
            else np.zeros((0, 5))
        )
        try:
            plot_labels(arr, names, self.save_dir)
        except Exception as e:  # a plot must never stop training
            LOGGER.warning(f"WARNING ⚠️ labels.jpg not written: {e}")

    def plot_batch(self, i: int, imgs, targets, paths) -> None:
        """train_batch{i}.jpg for the first three batches of the first epoch."""
        if not (self.enabled and self.plots and i < 3):
            return
        plot_images(imgs, targets.cpu(), paths, self.save_dir / f"train_batch{i}.jpg")

    def finish(self) -> None:
        """results.png from results.csv; close TensorBoard."""
        if self.enabled and self.plots and self.csv.is_file():
            plot_results(self.csv)
        if self.tb is not None:
            self.tb.close()
