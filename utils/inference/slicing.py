"""Sliced inference for small objects in large images (SAHI's idea, written here from the idea, not its code).

A large image shrunk to the model's size loses its small objects. Slicing runs the model on overlapping tiles of the
image instead, each letterboxed to the working size like any image, plus the whole image downscaled (so objects
larger than a tile are still seen whole), shifts every tile's boxes by the tile's corner back into the image's
pixels and merges the duplicates the overlaps create. Pure functions on arrays: `Detector` runs the crops, so every
backend format works (it only ever sees image crops at its input size).

Two merges (`--slice-merge`), measured by benchmarks/slicing.py:
- "nms": class-wise NMS (torchvision's batched_nms) over all tiles' boxes at the detector's IoU threshold;
- "nmm" (default): greedy non-maximum merging. Boxes are visited by confidence; a kept box absorbs (its box becomes
  the union) the later boxes of its class that overlap it by intersection-over-the-smaller-box >= `match_thres` when
  one of the two is cut by an inner tile edge and the other continues past that edge — two pieces of one object —
  and, through those, their own pieces (a large object's tile pieces all lie in its whole-image box). Boxes left
  overlapping the merged box by IoU >= the NMS threshold are suppressed as NMS would. Requiring the cut and the
  continuation keeps a small object that lies inside a larger one (IoS 1, but neither crosses a tile edge) a
  separate detection.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torchvision

from utils.core import args as A
from utils.core.errors import UserError
from utils.core.log import LOGGER

MERGES = ("nmm", "nms")
DEFAULT_OVERLAP = 0.2  # share of a tile's width / height that it has in common with its neighbour
DEFAULT_MERGE = "nmm"  # the better mAP in benchmarks/slicing.py (README "Sliced inference")
MATCH_THRES = 0.5  # nmm: intersection over the smaller box at which two pieces of one object join (0.3: same mAP)
PIECE_CONF = 0.5  # nmm: a piece joins a kept box only with at least this share of its confidence
EDGE_PX = 2.0  # a box side this close to an inner tile edge (network-input pixels) counts as cut by it
MIN_TILE = 32  # px: the smallest detection grid's stride; a smaller tile has no output cell of its own
BATCH = 16  # tiles per forward
# merged: the most confident CANDIDATES x max_det boxes of all tiles (YOLOv5's NMS caps its input the same way). At
# val's conf 0.001 a 2048 px image in 256 px tiles gives ~27,000 boxes (NMS alone 1 s per image); benchmarks/slicing.py
# gives the same mAP with 3, 10 or all of them
CANDIDATES = 3


@dataclass(frozen=True)
class SliceConfig:
    """How one image is sliced and merged. tile is (width, height) in the image's own pixels."""

    tile: tuple[int, int]
    overlap: float = DEFAULT_OVERLAP
    merge: str = DEFAULT_MERGE
    match_thres: float = MATCH_THRES
    full_image: bool = True  # also run the whole image (downscaled to the working size) for large objects
    batch: int = BATCH


@dataclass(frozen=True)
class Window:
    """One crop of the image: corners in image pixels, and which of its sides (left, top, right, bottom) lie inside
    the image, i.e. may cut an object (a side on the image border cuts nothing)."""

    x1: int
    y1: int
    x2: int
    y2: int
    inner: tuple[bool, bool, bool, bool]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width), numpy's order."""
        return self.y2 - self.y1, self.x2 - self.x1


def slice_config(
    slice: int | tuple[int, ...] | list[int] | None,
    overlap: float = DEFAULT_OVERLAP,
    merge: str = DEFAULT_MERGE,
) -> SliceConfig | None:
    """The checked config for --slice W H / --slice-overlap / --slice-merge (or the API's slice=, slice_overlap=,
    slice_merge=); None when slice is None. One UserError line for a bad value."""
    if slice is None:
        return None
    sizes = list(slice) if isinstance(slice, (list, tuple)) else [slice]
    whole = all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes)
    if len(sizes) not in (1, 2) or not whole or min(sizes) < MIN_TILE:
        A.fail("slice", sizes, f"give the tile width and height, whole numbers >= {MIN_TILE}", "e.g. --slice 640 640")
    A.check_float("slice_overlap", overlap, 0.0, 1.0, hi_open=True, todo="a fraction of the tile, e.g. 0.2")
    A.check_choice("slice_merge", merge, MERGES)
    w, h = (int(sizes[0]),) * 2 if len(sizes) == 1 else (int(sizes[0]), int(sizes[1]))
    return SliceConfig((w, h), float(overlap), merge)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles along one side: a step of tile * (1 - overlap), the last tile aligned to the far
    border (so it overlaps its neighbour by at least `overlap`); [0] when one tile covers the side."""
    if tile >= length:
        return [0]
    step = max(1, round(tile * (1 - overlap)))
    return [*range(0, length - tile, step), length - tile]


def slice_windows(shape: tuple[int, ...], cfg: SliceConfig) -> list[Window]:
    """The crops of an image of shape (h, w, ...): the tile grid, row by row, then the whole image when there is
    more than one tile (and cfg.full_image). A side shorter than the tile gets one tile as long as the side."""
    h, w = int(shape[0]), int(shape[1])
    tw, th = min(cfg.tile[0], w), min(cfg.tile[1], h)
    windows = [
        Window(x, y, x + tw, y + th, (x > 0, y > 0, x + tw < w, y + th < h))
        for y in tile_starts(h, th, cfg.overlap)
        for x in tile_starts(w, tw, cfg.overlap)
    ]
    if len(windows) > 1 and cfg.full_image:
        windows.append(Window(0, 0, w, h, (False, False, False, False)))
    return windows


def covers(shape: tuple[int, ...], tile: tuple[int, int]) -> bool:
    """True when one tile (w, h) covers a whole image of shape (h, w, ...): slicing it changes nothing."""
    return tile[0] >= shape[1] and tile[1] >= shape[0]


def check_tiles(shapes: list[tuple[int, int]], tile: tuple[int, int]) -> None:
    """--slice against the (h, w) of the images to run: a UserError when one tile covers every image (slicing would
    change nothing: a tile smaller than the images was meant), else one warning counting those a tile covers (they
    run whole, as without --slice), so a folder of mixed sizes still runs."""
    small = sum(covers(s, tile) for s in shapes)
    flag = f"--slice {tile[0]} {tile[1]}"
    if shapes and small == len(shapes):
        h, w = max(shapes, key=lambda s: s[0] * s[1])
        raise UserError(
            f"{flag}: one tile covers the whole of every image (the largest is {w}x{h}) — use tiles smaller than "
            f"the images, e.g. --slice {max(w // 2, MIN_TILE)} {max(h // 2, MIN_TILE)}, or drop --slice"
        )
    if small:
        LOGGER.warning(f"WARNING: {flag}: {small} of {len(shapes)} images fit in one tile; they run whole (no tiles)")


def crops_of(image: np.ndarray, windows: list[Window]) -> list[np.ndarray]:
    """The image under each window (views, no copies)."""
    return [image[wd.y1 : wd.y2, wd.x1 : wd.x2] for wd in windows]


def to_image(boxes: torch.Tensor, window: Window) -> torch.Tensor:
    """(n, 6) boxes in a crop's pixels -> the same boxes in the image's pixels (the crop corner added)."""
    out = boxes.clone()
    out[:, [0, 2]] += window.x1
    out[:, [1, 3]] += window.y1
    return out


def cut_sides(boxes: torch.Tensor, window: Window, margin: float) -> torch.Tensor:
    """(n, 4) bool: which sides (left, top, right, bottom) of each box (image pixels) lie within margin of an inner
    side of the window it was found in, i.e. where the tile may have cut the object."""
    edges = boxes.new_tensor([window.x1, window.y1, window.x2, window.y2])
    near = (boxes[:, :4] - edges).abs() <= margin
    return near & torch.tensor(window.inner)


def edge_margin(window: Window, in_size: tuple[int, int]) -> float:
    """EDGE_PX network-input pixels in the window's own pixels (the letterbox shrinks a crop by min(h/H, w/W))."""
    h, w = window.size
    return EDGE_PX / min(in_size[0] / h, in_size[1] / w)


def merge_nms(boxes: torch.Tensor, iou: float, agnostic: bool, max_det: int) -> torch.Tensor:
    """Class-wise (or agnostic) NMS over the boxes of all crops, highest confidence first."""
    groups = torch.zeros_like(boxes[:, 5]) if agnostic else boxes[:, 5]
    keep = torchvision.ops.batched_nms(boxes[:, :4], boxes[:, 4], groups, iou)[:max_det]
    return boxes[keep]


def _continues(side: np.ndarray, box: np.ndarray, others: np.ndarray, margin: float) -> np.ndarray:
    """Which of `others` extend past a cut side of `box` (side: its 4 cut flags): the rest of a cut object."""
    past = np.stack(
        (others[:, 0] < box[0] - margin, others[:, 1] < box[1] - margin, others[:, 2] > box[2] + margin,
         others[:, 3] > box[3] + margin), 1)  # fmt: skip
    return (past & side).any(1)


def _continued_by(cut: np.ndarray, box: np.ndarray, others: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Which of `others` are cut on a side that `box` extends past (box holds the rest of them)."""
    past = np.stack(
        (box[0] < others[:, 0] - margins, box[1] < others[:, 1] - margins, box[2] > others[:, 2] + margins,
         box[3] > others[:, 3] + margins), 1)  # fmt: skip
    return (past & cut).any(1)


def _pair_geometry(xy: np.ndarray, area: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intersection over the smaller box, IoU) of box k (4,) against every box of xy (n, 4)."""
    k_area = (k[2] - k[0]) * (k[3] - k[1])
    wh = (np.minimum(k[2:], xy[:, 2:]) - np.maximum(k[:2], xy[:, :2])).clip(0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / np.maximum(np.minimum(k_area, area), 1e-9), inter / np.maximum(k_area + area - inter, 1e-9)


def merge_nmm(
    boxes: torch.Tensor, cut: torch.Tensor, margins: torch.Tensor, iou: float, match_thres: float, agnostic: bool,
    max_det: int,
) -> torch.Tensor:  # fmt: skip
    """Greedy non-maximum merging (module docstring): pieces of one object cut by tile edges become their union
    (with the confidence and class of the most confident piece); other duplicates are suppressed at IoU >= iou.

    A piece of the kept box's object overlaps a member of the growing object by IoS >= match_thres, and one of the
    two is cut on a side the other continues past. Such a piece is dropped; it widens the object (and becomes a
    member) only with at least PIECE_CONF of the kept box's confidence: without that rule the near-zero-confidence
    boxes of a mAP run (conf 0.001) widen real objects to junk boxes (benchmarks/slicing.py: mAP50 0.67 -> 0.98).
    boxes (n, 6) in image pixels, cut (n, 4) bool from cut_sides, margins (n,) each box's edge_margin. Stops at
    max_det kept boxes: a box absorbs every match when it is kept, so later boxes cannot change the first ones."""
    order = boxes[:, 4].argsort(descending=True)
    b, cut, margins = boxes[order].double().numpy(), cut[order].numpy(), margins[order].double().numpy()
    xy = b[:, :4].copy()
    if not agnostic:  # shift each class to its own region: boxes of two classes never overlap
        xy += b[:, 5:6] * (xy.max() + 1 if len(xy) else 0)
    area = (xy[:, 2] - xy[:, 0]) * (xy[:, 3] - xy[:, 1])
    alive, kept = np.ones(len(b), bool), []
    for i in range(len(b)):
        if not alive[i]:
            continue
        alive[i] = False
        members, todo = [i], [i]
        while todo:  # grow the object piece by piece: a large object's pieces reach each other through the whole box
            k = todo.pop()
            ios = _pair_geometry(xy, area, xy[k])[0]
            pieces = _continues(cut[k], b[k], b, margins[k]) | _continued_by(cut, b[k], b, margins)
            match = alive & (ios >= match_thres) & pieces
            new = np.flatnonzero(match & (b[:, 4] >= PIECE_CONF * b[i, 4]))
            alive &= ~match  # a weak piece is dropped, only a confident one grows the box
            members += new.tolist()
            todo += new.tolist()
        row = b[i].copy()
        row[:2], row[2:4] = b[members, :2].min(0), b[members, 2:4].max(0)
        shift = xy[i, :2] - b[i, :2]  # the class offset
        alive &= _pair_geometry(xy, area, np.concatenate((row[:2] + shift, row[2:4] + shift)))[1] < iou
        kept.append(row)
        if len(kept) >= max_det:
            break
    return torch.from_numpy(np.array(kept, np.float32).reshape(-1, 6))


def merge_crops(
    dets: list[torch.Tensor],
    windows: list[Window],
    cfg: SliceConfig,
    in_size: tuple[int, int],
    iou: float,
    agnostic: bool,
    max_det: int,
) -> torch.Tensor:
    """Each crop's (n, 6) boxes (its own pixels, CPU float) -> one (m, 6) set in the image's pixels, merged by
    cfg.merge, highest confidence first. in_size: the (h, w) network input the crops were letterboxed to."""
    boxes = [to_image(d, wd) for d, wd in zip(dets, windows)]
    merged = torch.cat(boxes) if boxes else torch.zeros((0, 6))
    if len(windows) == 1:  # a single crop (the image itself): its NMS was the whole job
        return merged[:max_det]
    cut = torch.cat([cut_sides(b, wd, edge_margin(wd, in_size)) for b, wd in zip(boxes, windows)])
    margins = torch.cat([torch.full((len(b),), edge_margin(wd, in_size)) for b, wd in zip(boxes, windows)])
    top = merged[:, 4].argsort(descending=True)[: CANDIDATES * max_det]
    merged, cut, margins = merged[top], cut[top], margins[top]
    if cfg.merge == "nms":
        return merge_nms(merged, iou, agnostic, max_det)
    return merge_nmm(merged, cut, margins, iou, cfg.match_thres, agnostic, max_det)
