"""AutoAnchor: check how well Detect's anchors fit a dataset's boxes; evolve better ones when they do not."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils.core.errors import UserError
from utils.core.log import LOGGER, colorstr
from utils.core.parallel import unwrap

PREFIX = colorstr("AutoAnchor: ")
BPR_MIN = 0.98  # below this best possible recall the anchors are recomputed (YOLOv5)


def _ratio_metric(k: np.ndarray, wh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, na) worst-side ratio of every box to every anchor, best (n,) over anchors); 1.0 is a perfect fit."""
    with np.errstate(divide="ignore", invalid="ignore"):  # zero anchors (count-only yaml) fit nothing
        r = wh[:, None] / k[None]
        x = np.nan_to_num(np.minimum(r, 1 / r).min(2), nan=0.0)
    return x, x.max(1)


def bpr_aat(k: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> tuple[float, float]:
    """(best possible recall, anchors above threshold per target) of pixel anchors k (n, 2) for boxes wh (m, 2)."""
    x, best = _ratio_metric(np.asarray(k, np.float32).reshape(-1, 2), wh)
    return float((best > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def label_wh(dataset: Any, imgsz: int, scale_jitter: bool = False, seed: int = 0) -> np.ndarray:
    """Box (w, h) in pixels with every image's long side resized to imgsz; jitter x0.9-1.1 like training scale."""
    shapes = np.asarray(dataset.shapes, np.float64).reshape(-1, 2)
    shapes = imgsz * shapes / shapes.max(1, keepdims=True)
    if scale_jitter:  # seeded so that AutoAnchor gives the same answer run after run
        shapes = shapes * np.random.default_rng(seed).uniform(0.9, 1.1, size=(len(shapes), 1))
    parts = [np.asarray(lb, np.float64).reshape(-1, 5)[:, 3:5] * s for s, lb in zip(shapes, dataset.labels)]
    wh = np.concatenate(parts, 0) if parts else np.zeros((0, 2))
    return wh[(wh > 0).all(1)].astype(np.float32)


def check_anchors(dataset: Any, model: nn.Module, thr: float = 4.0, imgsz: int = 640) -> None:
    """Log the anchors' fit to the dataset; when BPR < 0.98, evolve new anchors and keep them if they fit better."""
    m = unwrap(model).model[-1]
    wh = label_wh(dataset, imgsz, scale_jitter=True)
    if not len(wh):
        LOGGER.warning(f"WARNING ⚠️ {PREFIX}no labels in the training set, anchors left unchanged")
        return
    stride = m.stride.detach().cpu().float().view(-1, 1, 1)
    anchors = (m.anchors.detach().cpu().float() * stride).view(-1, 2).numpy()
    bpr, aat = bpr_aat(anchors, wh, thr)
    s = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr >= BPR_MIN:
        LOGGER.info(f"{s}Current anchors are a good fit to dataset ✅")
        return
    LOGGER.info(f"{s}Anchors are a poor fit to dataset ⚠️, attempting to improve...")
    new = kmean_anchors(dataset, n=m.anchors.numel() // 2, img_size=imgsz, thr=thr, gen=1000, verbose=False)
    new_bpr = bpr_aat(new, wh, thr)[0]
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}Done ⚠️ (original anchors better than new anchors, proceeding with original anchors)")
        return
    _write_anchors(m, new)
    LOGGER.info(
        f"{PREFIX}Done ✅ new BPR {new_bpr:.3f} (optional: put these anchors in the model *.yaml) "
        f"{np.round(new).astype(int).reshape(m.nl, -1).tolist()}"
    )


def _write_anchors(m: nn.Module, pixels: np.ndarray) -> None:
    """Store area-sorted pixel anchors into Detect.anchors in grid units, smallest anchors on the smallest stride."""
    k = torch.tensor(pixels[np.argsort(pixels.prod(1))], dtype=torch.float32).view(m.nl, m.na, 2)
    order = torch.argsort(m.stride.detach().cpu())  # level order from smallest stride
    out = torch.empty_like(k)
    out[order] = k
    stride = m.stride.detach().cpu().float().view(-1, 1, 1)
    with torch.no_grad():
        m.anchors[:] = (out / stride).to(m.anchors.device, m.anchors.dtype)
    m._grids = {}  # the decode cache holds anchor grids built from the old anchors


def _kmeans(x: np.ndarray, n: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Plain Lloyd k-means with k-means++ seeding (used when scipy is not installed, or drops centres)."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        d2 = ((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        p = d2 / d2.sum() if d2.sum() > 0 else None  # all points already centres: pick uniformly
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.asarray(centres, np.float64)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(n)])
        if np.allclose(new, c):
            break
        c = new
    return c


def _initial_anchors(wh: np.ndarray, n: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """k-means on whitened wh (scipy's kmeans when available), back in pixels."""
    s = wh.std(0)
    s[s == 0] = 1.0  # identical boxes: nothing to whiten
    x = wh / s
    try:
        from scipy.cluster.vq import kmeans  # optional: scipy is not in requirements.txt, _kmeans stands in

        k = kmeans(x, n, iter=30, seed=seed)[0]
    except ImportError:
        k = _kmeans(x.astype(np.float64), n, rng)
    if len(k) != n:  # scipy drops duplicate centres (fewer distinct boxes than anchors): k-means++ keeps n
        LOGGER.info(f"{PREFIX}scipy's kmeans gave {len(k)} anchors for {n}: using plain k-means with k-means++ seeds")
        k = _kmeans(x.astype(np.float64), n, rng)
    return k * s


def _fitness(k: np.ndarray, wh: np.ndarray, thr: float) -> float:
    """Mean best-anchor ratio over boxes, counting only boxes some anchor matches within thr."""
    best = _ratio_metric(k, wh)[1]
    return float((best * (best > 1 / thr)).mean())


def _evolve(k: np.ndarray, wh: np.ndarray, thr: float, gen: int, rng: np.random.Generator, verbose: bool) -> np.ndarray:
    """Genetic refinement: multiplicative mutations of the anchors, kept whenever fitness improves."""
    f, mp, s = _fitness(k, wh, thr), 0.9, 0.1  # fitness, mutation probability, sigma
    pbar = tqdm(
        range(gen),
        desc=f"{PREFIX}Evolving anchors with Genetic Algorithm: fitness = {f:.4f}",
        bar_format="{l_bar}{bar:10}{r_bar}",
    )
    for _ in pbar:
        v = np.ones(k.shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mp) * rng.random() * rng.standard_normal(k.shape) * s + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(kg, wh, thr)
        if fg > f:
            f, k = fg, kg
            pbar.set_description(f"{PREFIX}Evolving anchors with Genetic Algorithm: fitness = {f:.4f}")
            if verbose:
                LOGGER.info(f"{PREFIX}fitness {f:.4f}: {np.round(k[np.argsort(k.prod(1))]).astype(int).tolist()}")
    return k


def kmean_anchors(
    dataset_or_wh: Any,
    n: int = 9,
    img_size: int = 640,
    thr: float = 4.0,
    gen: int = 1000,
    verbose: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Anchors (n, 2) in pixels, sorted by area, evolved for a dataset (or an (m, 2) array of box wh in pixels).

    k-means on whitened box sizes, then `gen` generations of a genetic search maximising the mean best ratio metric
    over thr. Deterministic for a given seed.
    """
    if isinstance(dataset_or_wh, np.ndarray) or torch.is_tensor(dataset_or_wh):
        wh0 = np.asarray(dataset_or_wh, np.float32).reshape(-1, 2)
    else:
        wh0 = label_wh(dataset_or_wh, img_size)
    rng = np.random.default_rng(seed)
    if (wh0 < 3.0).any(1).sum():
        LOGGER.info(f"{PREFIX}{int((wh0 < 3.0).any(1).sum())} of {len(wh0)} labels are < 3 pixels in size")
    wh = wh0[(wh0 >= 2.0).any(1)].astype(np.float32)  # sub-2-pixel boxes cannot steer the anchors
    if len(wh) == 0:
        raise UserError(
            f"AutoAnchor: no boxes of at least 2 pixels at --imgsz {img_size} — check the labels "
            f"or train with --noautoanchor"
        )
    LOGGER.info(f"{PREFIX}Running kmeans for {n} anchors on {len(wh)} points...")
    k = _initial_anchors(wh, n, rng, seed)
    k = _evolve(k.astype(np.float32), wh, thr, gen, rng, verbose)
    k = k[np.argsort(k.prod(1))].astype(np.float32)
    bpr, aat = bpr_aat(k, wh0, thr)
    LOGGER.info(
        f"{PREFIX}thr={1 / thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr; "
        f"n={n}, img_size={img_size}, anchors: {np.round(k).astype(int).tolist()}"
    )
    return k
