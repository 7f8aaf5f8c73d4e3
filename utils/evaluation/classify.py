"""Image-classification metrics: top-1 / top-5 accuracy, per-class accuracy, mean loss and a confusion matrix.

    m = evaluate_classifier(model, loader, nc=3, device=device)   # model: any callable images -> logits (B, nc)
    m.top1, m.top5, m.loss, m.per_class_top1, m.confusion, m.speed

Counts are accumulated as integers and summed over DDP ranks (each rank evaluates its shard), so every rank ends with
the same numbers and the accuracies are exact fractions of the whole split, whatever the batch size or world size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from utils.core.timing import Profile
from utils.dataloaders.classify import normalize_batch

TOPK = 5


@dataclass
class ClassifyMetrics:
    """Accuracy of one evaluation. Accuracies are fractions (0..1); a class without images has NaN accuracy.

    confusion[true, predicted] counts images; speed is (pre-process, inference, loss) in ms per image."""

    top1: float = 0.0
    top5: float = 0.0
    loss: float = 0.0
    images: int = 0
    per_class_top1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_class_top5: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    speed: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def fitness(self) -> float:
        """What best.pt is chosen by: top-1 (YOLOv5's classifier rule)."""
        return self.top1


class _Tally:
    """Integer counts of one evaluation: per-class hits at 1 and at k, the confusion matrix, the summed loss."""

    def __init__(self, nc: int) -> None:
        self.nc = nc
        self.confusion = torch.zeros(nc, nc, dtype=torch.int64)
        self.hit5 = torch.zeros(nc, dtype=torch.int64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> None:
        labels = labels.cpu().long()
        top = logits.float().topk(min(TOPK, self.nc), dim=1).indices.cpu()
        self.confusion += torch.bincount(labels * self.nc + top[:, 0], minlength=self.nc * self.nc).view(self.nc, -1)
        hit5 = (top == labels[:, None]).any(1)
        self.hit5 += torch.bincount(labels[hit5], minlength=self.nc)
        self.loss_sum += loss_sum

    def reduce(self) -> None:
        """Sum the counts of every DDP rank (a no-op outside DDP)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        # gloo and NCCL both reduce a float64 vector; counts stay exact far beyond any dataset size
        flat = torch.cat([self.confusion.flatten().double(), self.hit5.double(), self.loss_sum.view(1)])
        if dist.get_backend() == "nccl":
            flat = flat.cuda()
        dist.all_reduce(flat)
        flat = flat.cpu()
        n2 = self.nc * self.nc
        self.confusion = flat[:n2].round().long().view(self.nc, self.nc)
        self.hit5 = flat[n2 : n2 + self.nc].round().long()
        self.loss_sum = flat[-1]

    def metrics(self, speed: tuple[float, float, float]) -> ClassifyMetrics:
        conf = self.confusion.numpy()
        counts = conf.sum(1)
        n = int(counts.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            per1 = np.diag(conf) / counts
            per5 = self.hit5.numpy() / counts
        return ClassifyMetrics(
            top1=float(np.trace(conf) / n) if n else 0.0,
            top5=float(self.hit5.sum().item() / n) if n else 0.0,
            loss=float(self.loss_sum.item() / n) if n else 0.0,
            images=n,
            per_class_top1=per1,
            per_class_top5=per5,
            counts=counts,
            confusion=conf,
            speed=speed,
        )


@torch.no_grad()
def evaluate_classifier(
    model: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    nc: int,
    device: torch.device | str = "cpu",
    half: bool = False,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    desc: str | None = None,
    channels_last: bool = False,
) -> ClassifyMetrics:
    """Run `model` (in eval mode already) over `loader` (images (B, 3, H, W) float, labels (B,) int) and count.

    criterion: the loss reported (default plain cross-entropy, the loss of the hard labels whatever the training
    smoothing was); half: fp16 inputs (CUDA); desc: a progress-bar title (None: no bar). Under DDP each rank passes
    its shard and every rank gets the whole split's metrics."""
    device = torch.device(device)
    tally, times = _Tally(nc), (Profile(device), Profile(device), Profile(device))
    loss_fn = criterion or (lambda logits, y: F.cross_entropy(logits, y, reduction="sum"))
    bar = tqdm(loader, desc=desc, bar_format="{l_bar}{bar:10}{r_bar}", leave=False) if desc else loader
    seen = 0
    for images, labels in bar:
        with times[0]:
            images = normalize_batch(images.to(device, non_blocking=True))  # uint8 loaders: normalised here
            images = images.half() if half else images.float()
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device)
        with times[1]:
            logits = model(images)
        with times[2]:
            loss = loss_fn(logits.float(), labels)
            # a criterion with mean reduction (training's) gives the batch mean: weigh it by the batch size
            total = float(loss) * (1 if criterion is None else len(labels))
            tally.add(logits, labels, total)
        seen += len(labels)
    tally.reduce()
    speed = tuple(t.t * 1e3 / max(seen, 1) for t in times)
    return tally.metrics(speed)  # type: ignore[arg-type]


def format_table(m: ClassifyMetrics, names: dict[int, str], verbose: bool = True) -> list[str]:
    """YOLOv5's classify/val.py table: an 'all' row (images, top-1, top-5) and, verbose, one row per class."""
    rows = [f"{'Class':>24}{'Images':>12}{'top1_acc':>12}{'top5_acc':>12}"]
    rows.append(f"{'all':>24}{m.images:>12}{m.top1:>12.3g}{m.top5:>12.3g}")
    if verbose:
        for i, name in names.items():
            if i < len(m.counts):
                rows.append(f"{name:>24}{int(m.counts[i]):>12}{m.per_class_top1[i]:>12.3g}{m.per_class_top5[i]:>12.3g}")
    return rows


def confusion_for_plot(m: ClassifyMetrics) -> np.ndarray:
    """The confusion matrix as plot_confusion_matrix draws it: [predicted, true], each true class's column sums
    to 1."""
    counts = m.confusion.T.astype(float)
    return counts / counts.sum(0, keepdims=True).clip(min=1)
