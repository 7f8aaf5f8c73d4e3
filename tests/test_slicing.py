"""Sliced inference (issue 23): the tile grid, boxes mapped back to the image's pixels exactly, boxes cut by tile
edges merged, images smaller than a tile, val.py --slice scoring the original images, detect.py --slice and the bad
inputs (one line, exit code 2)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import detect
import hubconf
import val
from tests.fixtures_api import stub_detector
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.inference.api import Detector
from utils.inference.backend import DetectBackend
from utils.inference.slicing import merge_nmm, slice_config, slice_windows, tile_starts

RED, GREEN = (255, 0, 0), (0, 255, 0)  # RGB
# x1 y1 x2 y2 of each object in SCENE: A inside one tile, B cut by the edge x = 64 of the first tile column, C wider
# than the overlap (cut in every tile that holds it), D against the image corner. Tiles 64 x 64, overlap 0.25.
OBJECTS = [((20, 10, 40, 30), 0), ((58, 15, 80, 35), 0), ((85, 66, 125, 90), 1), ((180, 120, 196, 134), 0)]
TILE = dict(slice=(64, 64), slice_overlap=0.25)


class BlobBackend(DetectBackend):
    """Stand-in model: every 4-connected region of pure red (class 0) or pure green (class 1) pixels is one box, its
    confidence growing with its area in input pixels (a whole object outranks a piece of it; under 67 px² it falls
    below conf 0.25). At scale 1 its boxes are exact, so the slicing geometry can be checked to the pixel."""

    def __init__(self, *args, **kwargs):  # no weights: the attributes DetectBackend's users read
        torch.nn.Module.__init__(self)
        self.stride, self.names, self.nc = 32, {0: "red", 1: "green"}, 2
        self.pt, self.fp16, self.any_shape = True, False, True
        self.device, self.weights, self.static_shape = torch.device("cpu"), Path("blob.pt"), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 64, 7)
        for b, im in enumerate(x):
            rows = []
            for c, (hi, lo) in enumerate(((0, 1), (1, 0))):
                mask = ((im[hi] > 0.9) & (im[lo] < 0.1) & (im[2] < 0.1)).numpy().astype(np.uint8)
                for x0, y0, w, h, area in cv2.connectedComponentsWithStats(mask, connectivity=4)[2][1:]:
                    rows.append([x0 + w / 2, y0 + h / 2, w, h, area / (area + 200), c == 0, c == 1])
            out[b, : len(rows)] = torch.tensor(rows, dtype=torch.float32).reshape(-1, 7)
        return out

    def warmup(self, imgsz: tuple) -> None:
        pass


def blob_detector(**kw) -> Detector:
    det = stub_detector(imgsz=(64, 64))
    det.backend, det.names = BlobBackend(), BlobBackend().names
    for k, v in kw.items():
        setattr(det, k, v)
    return det


def scene(h: int = 136, w: int = 200, objects=OBJECTS) -> np.ndarray:
    im = np.full((h, w, 3), 40, np.uint8)
    for (x1, y1, x2, y2), c in objects:
        im[y1:y2, x1:x2] = (RED, GREEN)[c]
    return im


def exact(objects=OBJECTS) -> list[list[float]]:
    return sorted([float(v) for v in box] + [float(c)] for box, c in objects)


def boxes_of(t: torch.Tensor) -> list[list[float]]:
    return sorted(r[:4] + r[5:] for r in t.tolist())


@pytest.mark.parametrize("length,tile,overlap", [(200, 64, 0.25), (1000, 256, 0.2), (1001, 320, 0.0), (65, 64, 0.5)])
def test_tile_grid_covers_with_the_overlap(length: int, tile: int, overlap: float) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile  # first at the start, last against the far border
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    shared = [a + tile - b for a, b in zip(starts, starts[1:])]  # pixels each tile shares with the next
    step = round(tile * (1 - overlap))
    assert min(shared) >= round(tile * overlap) and set(shared[:-1]) <= {tile - step}


def test_windows_grid_and_whole_image() -> None:
    cfg = slice_config((64, 64), 0.25)
    wins = slice_windows((136, 200, 3), cfg)
    assert [(w.x1, w.y1) for w in wins[:5]] == [(0, 0), (48, 0), (96, 0), (136, 0), (0, 48)]
    assert len(wins) == 4 * 3 + 1 and (wins[-1].x2, wins[-1].y2, wins[-1].inner) == (200, 136, (False,) * 4)
    assert wins[0].inner == (False, False, True, True) and wins[5].inner == (True, True, True, True)
    assert [(w.x1, w.y1, w.x2, w.y2) for w in slice_windows((50, 300), cfg)][:2] == [(0, 0, 64, 50), (48, 0, 112, 50)]


def test_boxes_map_back_exactly_and_cut_boxes_merge() -> None:
    det, im = blob_detector(), scene()[..., ::-1]  # detect_sliced takes BGR
    tiles_only = dataclasses.replace(slice_config((64, 64), 0.25, "nmm"), full_image=False)
    merged = det.detect_sliced([im], tiles_only)[0][0]
    assert boxes_of(merged) == exact()  # B and C were cut by tile edges: their pieces are joined back, to the pixel
    plain = det.detect_sliced([im], dataclasses.replace(tiles_only, merge="nms"))[0][0]
    assert len(plain) > len(OBJECTS)  # NMS keeps the pieces whose IoU with the whole box is low
    a, b, c, d = exact()  # C is in no tile whole: only the merge gets it back
    assert [a, b, d] == [x for x in boxes_of(plain) if x in exact()]


def test_api_slice_keeps_small_and_large_objects() -> None:
    big = [((40, 30, 300, 200), 1), ((330, 250, 346, 262), 0)]  # larger than a tile, and tiny
    im = scene(300, 400, big)
    res = blob_detector(**TILE)(im)
    assert res.s == (1, 3, 64, 64)  # 8 x 6 tiles in batches of 16, then the whole image
    large, tiny = sorted(res[0].boxes.tolist(), key=lambda r: (r[0] - r[2]) * (r[3] - r[1]))
    assert tiny[:4] + tiny[5:] == exact(big)[1]  # found at full resolution in its tile, to the pixel
    # the large one: its tile pieces (cut at 15 tile edges) joined through its whole-image box into one box, which is
    # the union of the exact pieces and the whole-image box (at 0.16 scale a few pixels off)
    iou = float(box_iou(torch.tensor([large[:4]]), torch.tensor([exact(big)[0][:4]])))
    assert large[5] == 1 and iou > 0.95
    shrunk = blob_detector()(im)[0].boxes  # no slicing: the tiny object is gone at 64 px
    assert shrunk[:, 5].tolist() == [1.0]


def test_image_smaller_than_a_tile_runs_whole() -> None:
    im = scene(40, 50, [((10, 5, 30, 25), 0)])
    sliced, whole = blob_detector(**TILE)(im), blob_detector()(im)
    assert boxes_of(sliced[0].boxes) == boxes_of(whole[0].boxes)  # one tile = the image, letterboxed as usual
    np.testing.assert_allclose(sliced[0].boxes[0, :4], [10, 5, 30, 25], atol=1.5)  # upscaled 1.28x and back


def test_nmm_keeps_a_small_object_inside_a_large_one() -> None:
    """IoS is 1 for a box inside another: only pieces cut by a tile edge are joined, not nested objects."""
    boxes = torch.tensor([[0, 0, 100, 100, 0.9, 0], [10, 10, 20, 20, 0.8, 0], [0, 0, 64, 50, 0.7, 1]])
    cut = torch.tensor([[False] * 4, [False] * 4, [False, False, True, False]])
    out = merge_nmm(boxes, cut, torch.full((3,), 2.0), iou=0.45, match_thres=0.5, agnostic=False, max_det=10)
    assert boxes_of(out) == boxes_of(boxes)  # nested kept; the cut class-1 box has no class-1 rest to join
    more = torch.cat((boxes, torch.tensor([[0, 0, 90, 50, 0.6, 1]])))
    out = merge_nmm(more, torch.cat((cut, torch.zeros(1, 4, dtype=torch.bool))), torch.full((4,), 2.0), 0.45, 0.5,
                    False, 10)  # fmt: skip
    assert boxes_of(out) == sorted(boxes_of(boxes[:2]) + [[0.0, 0.0, 90.0, 50.0, 1.0]])  # the piece joins its rest


def test_val_slice_scores_the_original_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), scene()[..., ::-1])
        rows = [f"{c} {(b[0] + b[2]) / 400} {(b[1] + b[3]) / 272} {(b[2] - b[0]) / 200} {(b[3] - b[1]) / 136}\n"
                for b, c in OBJECTS]  # fmt: skip
        (tmp_path / "labels" / "val" / f"{i}.txt").write_text("".join(rows))
    monkeypatch.setattr(val, "DetectBackend", BlobBackend)
    data = {"path": str(tmp_path), "val": str(folder), "names": {0: "red", 1: "green"}, "nc": 2}
    kw = dict(data=data, weights="blob.pt", imgsz=64, device="cpu", workers=0, plots=False, project=tmp_path)
    sliced = val.run(**kw, slice=[64, 64], slice_overlap=0.25)[0]
    assert sliced[2] == pytest.approx(1.0) and sliced[3] == pytest.approx(1.0)  # every box exact, in original pixels
    assert val.run(**kw)[0][3] < 0.9  # the same images shrunk to 64 px: boxes off by pixels
    with pytest.raises(UserError, match="covers the whole of every image"):
        val.run(**kw, slice=[256, 256])


def test_bad_slice_values_fail_before_loading(tmp_path: Path) -> None:
    for kw, match in [
        (dict(slice=[0, 64]), "--slice 0 64: give the tile width and height"),
        (dict(slice=[64.5, 64]), "whole numbers"),
        (dict(slice=[64], slice_overlap=-0.1), "--slice-overlap -0.1: must be in"),
        (dict(slice=[64], slice_overlap=1.0), "must be in"),
        (dict(slice=[64], slice_merge="wbf"), "--slice-merge 'wbf': not a valid choice"),
    ]:
        with pytest.raises(UserError, match=match):
            detect.run(weights=tmp_path / "none.pt", source=tmp_path, **kw)  # no weights needed to fail
        with pytest.raises(UserError, match=match):
            Detector(tmp_path / "none.pt", **kw)
        with pytest.raises(UserError, match=match):
            hubconf.custom(tmp_path / "none.pt", device="cpu", **kw)


def test_hub_custom_takes_slice(micro_pt: Path) -> None:
    model = hubconf.custom(micro_pt, device="cpu", imgsz=64, slice=96, slice_merge="nms", _verbose=False)
    assert (model.slice, model.slice_overlap, model.slice_merge) == (96, 0.2, "nms")
    assert model(np.zeros((100, 200, 3), np.uint8)).s == (7, 3, 64, 64)  # 3 x 2 tiles + the whole image, one batch


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "detect.py"), "--device", "cpu", "--project", str(cwd), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
    )


def test_detect_cli_slice(micro_pt: Path, tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "big.jpg"), np.random.default_rng(0).integers(0, 255, (150, 200, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "small.jpg"), np.zeros((40, 50, 3), np.uint8))
    p = _cli("--weights", str(micro_pt), "--source", str(tmp_path), "--imgsz", "64", "--slice", "96", "64",
             "--conf-thres", "0.001", "--save-txt", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "1 of 2 images fit in one tile" in out and "Results saved to" in out and "Traceback" not in out
    assert sorted(f.name for f in (tmp_path / "exp" / "labels").iterdir()) == ["big.txt", "small.txt"]
    rows = np.loadtxt(tmp_path / "exp" / "labels" / "big.txt", ndmin=2)
    assert len(rows) and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()  # boxes within the original image
    p = _cli("--weights", str(micro_pt), "--source", str(tmp_path / "small.jpg"), "--slice", "64", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "--slice 64 64: one tile covers the whole of every image (the largest is 50x40)" in p.stderr
