"""Drawing and plotting: box annotation on images, training/validation figures.

Drawing uses OpenCV (fast, no figure overhead); charts use matplotlib with the non-interactive Agg backend so that
plotting works on headless machines and inside DataLoader-free CI runs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.core.log import LOGGER

# A fixed, well-separated palette (hex); class i gets PALETTE[i % len]. Fixed so a class keeps its colour across runs.
_HEX = (
    "FF3838",
    "FF9D97",
    "FF701F",
    "FFB21D",
    "CFD231",
    "48F90A",
    "92CC17",
    "3DDB86",
    "1A9334",
    "00D4BB",
    "2C99A8",
    "00C2FF",
    "344593",
    "6473FF",
    "0018EC",
    "8438FF",
    "520085",
    "CB38FF",
    "FF95C8",
    "FF37C7",
)
_PALETTE = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _HEX]  # RGB tuples


def colors(i: int, bgr: bool = False) -> tuple[int, int, int]:
    """Colour of class i as an (R, G, B) tuple, or (B, G, R) for OpenCV images when bgr=True."""
    c = _PALETTE[int(i) % len(_PALETTE)]
    return (c[2], c[1], c[0]) if bgr else c


def _mpl():
    """matplotlib.pyplot on the Agg backend (imported lazily: importing pyplot is slow and opens no window here)."""
    import matplotlib  # heavy: pyplot takes ~0.5 s to import, and only charts need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: see above

    return plt


class Annotator:
    """Draw labelled boxes on a BGR uint8 image with OpenCV.

    Line width and font scale grow with the image size so labels stay readable on 64 px thumbnails and 4K frames.
    """

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3:
            raise TypeError("Annotator expects an HxWx3 uint8 numpy image (BGR)")
        self.im = np.ascontiguousarray(im)  # cv2 drawing needs contiguous memory
        self.lw = line_width or max(round(sum(im.shape[:2]) / 2 * 0.003), 2)
        self.tf = max(self.lw - 1, 1)  # font thickness
        self.fs = self.lw / 3  # font scale

    def box_label(
        self,
        box: Sequence[float],
        label: str = "",
        color: tuple[int, int, int] = (128, 128, 128),
        txt_color: tuple[int, int, int] = (255, 255, 255),
    ) -> None:
        """Draw one xyxy box (pixels) and, when given, its label on a filled tag above (or inside) the box."""
        p1 = (int(box[0]), int(box[1]))
        p2 = (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        w, h = cv2.getTextSize(label, 0, fontScale=self.fs, thickness=self.tf)[0]
        outside = p1[1] - h - 3 >= 0  # tag above the box if it fits in the image, else just inside its top
        p2 = (p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(self.im, p1, p2, color, -1, cv2.LINE_AA)
        org = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(self.im, label, org, 0, self.fs, txt_color, thickness=self.tf, lineType=cv2.LINE_AA)

    def text(self, xy: Sequence[float], text: str, txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """Plain text with its top-left corner at xy."""
        h = cv2.getTextSize(text, 0, fontScale=self.fs, thickness=self.tf)[0][1]
        cv2.putText(self.im, text, (int(xy[0]), int(xy[1]) + h), 0, self.fs, txt_color, self.tf, cv2.LINE_AA)

    def result(self) -> np.ndarray:
        """The annotated image (BGR uint8)."""
        return self.im


def _save_fig(fig, path: str | Path, dpi: int = 200) -> Path:
    """Save and close a figure (closing matters: pyplot keeps every open figure alive)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _mpl().close(fig)
    return path


def _plot_curves(
    px: np.ndarray,
    py: np.ndarray,
    label: Callable[[int], str | None],
    mean_label: Callable[[np.ndarray], str],
    axes: tuple[str, str, str],
    save_path: str | Path,
) -> Path:
    """Both curve plots: one thin line per class (label(i) when < 21 classes, else all grey and unlabelled), the class
    mean thick and blue (mean_label(mean curve)), both axes [0, 1]; axes: (x label, y label, title)."""
    plt = _mpl()
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    py = np.asarray(py).reshape(-1, len(px))
    per_class = 0 < len(py) < 21
    for i, y in enumerate(py):
        ax.plot(px, y, linewidth=1, label=label(i) if per_class else None, color=None if per_class else "grey")
    if len(py):
        y = py.mean(0)
        ax.plot(px, y, linewidth=3, color="blue", label=mean_label(y))
    xlabel, ylabel, title = axes
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save_fig(fig, save_path)


def plot_pr_curve(
    px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_path: str | Path = "PR_curve.png", names: Sequence[str] = ()
) -> Path:
    """Precision-recall curve per class (legend when < 21 classes) and their mean; ap (nc, t), column 0 = AP50."""
    return _plot_curves(
        px,
        py,
        lambda i: f"{names[i] if i < len(names) else i} {ap[i, 0]:.3f}",
        lambda _: f"all classes {ap[:, 0].mean():.3f} mAP@0.5",
        ("Recall", "Precision", "Precision-Recall Curve"),
        save_path,
    )


def plot_mc_curve(
    px: np.ndarray,
    py: np.ndarray,
    save_path: str | Path = "mc_curve.png",
    names: Sequence[str] = (),
    xlabel: str = "Confidence",
    ylabel: str = "Metric",
) -> Path:
    """A metric (F1, P or R) against confidence per class, and the class mean with its best point in the legend."""
    return _plot_curves(
        px,
        py,
        lambda i: str(names[i]) if i < len(names) else None,
        lambda y: f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}",
        (xlabel, ylabel, f"{ylabel}-Confidence Curve"),
        save_path,
    )


def plot_confusion_matrix(
    matrix: np.ndarray, labels: Sequence[str], save_path: str | Path = "confusion_matrix.png", normalize: bool = True
) -> Path:
    """Heat map of matrix[predicted, true]; cell values are written when there are few classes."""
    plt = _mpl()
    n = len(labels)
    fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
    shown = np.where(matrix < 0.005, np.nan, matrix) if normalize else matrix  # blank near-empty cells
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax)
    if n < 30:  # tick labels and numbers only while they stay legible
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(n), labels)
        for (i, j), v in np.ndenumerate(matrix):
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=8)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix" + (" (normalised)" if normalize else ""))
    return _save_fig(fig, save_path, dpi=250)


def output_to_target(output: Sequence[torch.Tensor], max_det: int = 300) -> np.ndarray:
    """NMS outputs (per image (n, 6) xyxy conf cls) -> (N, 7) [batch_index, cls, cx, cy, w, h, conf] for plot_images."""
    rows = []
    for i, o in enumerate(output):
        o = o[:max_det].detach().float().cpu()
        box, conf, cls = o[:, :4], o[:, 4:5], o[:, 5:6]
        xywh = torch.cat(((box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]), 1)
        rows.append(torch.cat((torch.full_like(conf, i), cls, xywh, conf), 1))
    return torch.cat(rows, 0).numpy() if rows else np.zeros((0, 7), dtype=np.float32)


def _to_numpy_images(images) -> np.ndarray:
    """(B, 3, H, W) uint8 / float 0-1 tensor or array -> (B, H, W, 3) uint8 RGB."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.size and images.max() <= 1.0:  # float 0-1 input
        images = images * 255
    return images.clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def plot_images(
    images,
    targets,
    paths: Sequence[str] | None = None,
    fname: str | Path = "images.jpg",
    names: dict[int, str] | Sequence[str] | None = None,
    max_size: int = 1920,
    max_subplots: int = 16,
    conf_thres: float = 0.25,
) -> Path:
    """Mosaic of a batch with its boxes: targets (n, 6) [batch, cls, cx, cy, w, h] labels or (n, 7) with a
    conf column (predictions; only conf > conf_thres drawn). Boxes may be normalised (0-1) or in pixels."""
    ims = _to_numpy_images(images)[:max_subplots]
    targets = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    targets = targets.reshape(-1, targets.shape[-1] if targets.ndim == 2 else 6)
    bs, h, w = ims.shape[0], ims.shape[1], ims.shape[2]
    ns = max(math.ceil(bs**0.5), 1)  # grid side
    scale = min(1.0, max_size / (ns * max(h, w)))
    th, tw = math.ceil(h * scale), math.ceil(w * scale)
    mosaic = np.full((ns * th, ns * tw, 3), 255, dtype=np.uint8)
    for i, im in enumerate(ims):
        y0, x0 = (i // ns) * th, (i % ns) * tw
        mosaic[y0 : y0 + th, x0 : x0 + tw] = cv2.resize(im, (tw, th)) if scale < 1 else im
    mosaic = np.ascontiguousarray(mosaic[..., ::-1])  # RGB -> BGR for OpenCV
    ann = Annotator(mosaic, line_width=max(round(max(th, tw) / 160), 1))
    for i in range(bs):
        y0, x0 = (i // ns) * th, (i % ns) * tw
        cv2.rectangle(ann.im, (x0, y0), (x0 + tw, y0 + th), (255, 255, 255), 2)  # tile border
        if paths is not None and i < len(paths):
            ann.text((x0 + 3, y0 + 3), Path(paths[i]).name[:40], txt_color=(220, 220, 220))
        _draw_targets(ann, targets[targets[:, 0] == i], x0, y0, tw, th, scale, names, conf_thres)
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(fname), ann.result())
    return fname


def _class_name(names, c: int) -> str:
    """Name of class c from a dict or list of names, or the id itself when unknown."""
    if isinstance(names, dict):
        return str(names.get(c, c))
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def _draw_targets(
    ann: Annotator, t: np.ndarray, x0: int, y0: int, tw: int, th: int, scale: float, names, conf_thres: float
) -> None:
    """Draw one tile's label/prediction rows (see plot_images) offset to the tile at (x0, y0)."""
    if not len(t):
        return
    boxes = t[:, 2:6].copy()
    if boxes.max() <= 1.01:  # normalised -> tile pixels
        boxes *= [tw, th, tw, th]
    else:  # pixels of the original batch image -> tile pixels
        boxes *= scale
    xyxy = np.concatenate((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)
    xyxy += [x0, y0, x0, y0]
    has_conf = t.shape[1] > 6
    for j, box in enumerate(xyxy):
        c = int(t[j, 1])
        if has_conf and t[j, 6] <= conf_thres:
            continue
        label = f"{_class_name(names, c)} {t[j, 6]:.1f}" if has_conf else _class_name(names, c)
        ann.box_label(box, label, color=colors(c, bgr=True))


def _read_results_csv(file: Path) -> tuple[list[str], np.ndarray]:
    """Header names and a float array of results.csv (header padded with spaces by the trainer is stripped)."""
    with open(file, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise ValueError("no data rows")
    header = [h.strip() for h in rows[0]]
    data = np.array([[float(v) for v in r] for r in rows[1:]], dtype=float)
    return header, data


def plot_results(file: str | Path = "results.csv") -> Path | None:
    """Plot every results.csv column against the first (epoch) into results.png beside the csv; returns its path.

    A missing or unreadable csv only warns: plotting must never stop a finished training run.
    """
    file = Path(file)
    try:
        header, data = _read_results_csv(file)
    except (OSError, ValueError) as e:
        LOGGER.warning(f"WARNING ⚠️ plot_results: cannot read {file} ({e}) — no results.png written")
        return None
    plt = _mpl()
    n = len(header) - 1
    cols = min(max(n, 1), 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols + 2, 3 * rows), tight_layout=True, squeeze=False)
    x = data[:, 0]
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        ax.plot(x, data[:, k + 1], marker=".", linewidth=2, markersize=6)
        ax.set_title(header[k + 1], fontsize=10)
    return _save_fig(fig, file.with_name("results.png"))


def plot_labels(
    labels: np.ndarray, names: dict[int, str] | Sequence[str] | None = None, save_dir: str | Path = "."
) -> Path:
    """Dataset label statistics into save_dir/labels.jpg: instances per class, centre positions, box sizes, and all
    boxes drawn centred on one square. labels (n, 5) = [cls, cx, cy, w, h] normalised."""
    plt = _mpl()
    labels = np.asarray(labels, dtype=float).reshape(-1, 5)
    c, b = labels[:, 0].astype(int), labels[:, 1:]
    nc = int(max(c.max() + 1 if len(c) else 0, len(names) if names is not None else 0))
    fig, ax = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = ax.ravel()
    counts = np.bincount(c, minlength=nc)
    ax[0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    ax[0].set(ylabel="instances", title=f"{len(labels)} labels, {nc} classes")
    if 0 < nc < 30:
        ax[0].set_xticks(range(nc), [_class_name(names, i) for i in range(nc)], rotation=90, fontsize=8)
    ax[1].hist2d(b[:, 0], b[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[1].set(xlabel="x", ylabel="y", title="box centres")
    ax[2].hist2d(b[:, 2], b[:, 3], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set(xlabel="width", ylabel="height", title="box sizes")
    canvas = np.full((500, 500, 3), 255, dtype=np.uint8)
    for k in range(min(len(b), 1000)):  # outlines of up to 1000 boxes centred on the canvas
        w, h = b[k, 2] * 500, b[k, 3] * 500
        cv2.rectangle(
            canvas, (int(250 - w / 2), int(250 - h / 2)), (int(250 + w / 2), int(250 + h / 2)), colors(c[k]), 1
        )
    ax[3].imshow(canvas)
    ax[3].axis("off")
    return _save_fig(fig, Path(save_dir) / "labels.jpg")
